//! What CNI plugins print and what config files hold, as the agent reads them: a network
//! config (`.conf` and `.conflist`), a plugin's result and the pod IPs taken from it, a
//! plugin's error, a cached result. None of these may panic, whatever the bytes:
//! `cargo fuzz run cni`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for name in ["x.conf", "x.conflist"] {
        if let Ok(list) = edged::network::config::parse(name, data) {
            for i in 0..list.plugins.len() {
                let _ = edged::network::config::plugin_stdin(&list, i, None, &Default::default());
            }
        }
    }
    if let Ok(r) = edged::network::result::parse(data) {
        let _ = edged::network::result::pod_ips(&r, "eth0");
    }
    let _ = edged::network::result::error_message(data, data, "exit status 1");
    let _ = edged::network::cache::parse(data);
});
