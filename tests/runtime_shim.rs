//! The shim v2 backend against the real containerd-shim-runc-v2, runc (and crun), as root.
//! Tests share the runc state dir and cgroups, so they run one at a time.

#[path = "common/rootfs.rs"]
mod rootfs;

#[allow(dead_code)]
#[path = "common/backend.rs"]
mod backend;

use backend::{cmdlines, shim_config, Backend};
use edged::runtime::cgroups::Layout;
use edged::runtime::shim::ShimConfig;
use edged::runtime::{
    ContainerConfig, ContainerState, ErrorKind, Mount, PodSandboxConfig, Resources, Runtime, Stage,
};
use edged::server::streaming::{exec, Outcome, StreamOptions, Streams, TermSize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_with(runtime_binary: &str) -> Backend {
    Backend::new("rt", shim_config(runtime_binary))
}

fn env() -> Backend {
    env_with("runc")
}

/// Waits until the log file holds `needle`; returns the whole file.
fn wait_log(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never in {}: {text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The text of CRI log lines of `stream`, in order.
fn log_lines(text: &str, stream: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_ts, s, _tag, msg) = (f.next()?, f.next()?, f.next()?, f.next().unwrap_or(""));
            (s == stream).then(|| msg.to_string())
        })
        .collect()
}

/// Pids of shim daemons serving container `id` (by command line).
fn shim_pids(id: &str) -> Vec<i32> {
    cmdlines()
        .filter(|(_, cmd)| {
            cmd.contains("containerd-shim-runc-v2") && cmd.contains(id) && !cmd.contains(" start")
        })
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
fn exit_codes_and_reasons() {
    let e = env();
    let pod = e.pod("exits");
    let ok = e.start(&pod, &e.config(&pod, "ok", "exit 0"));
    let bad = e.start(&pod, &e.config(&pod, "bad", "exit 3"));
    let s = e.wait_exit(&ok);
    assert_eq!(
        (s.exit_code, s.reason.as_deref()),
        (Some(0), Some("Completed"))
    );
    assert!(s.started_at.is_some() && s.finished_at.is_some());
    let s = e.wait_exit(&bad);
    assert_eq!((s.exit_code, s.reason.as_deref()), (Some(3), Some("Error")));
    assert_eq!(s.image_id, "sha256:0123456789abcdef");
    // A container seen running is then watched in /proc; its exit still reaches the record
    // with the code its shim reports.
    let late = e.start(&pod, &e.config(&pod, "late", "sleep 2; exit 7"));
    assert_eq!(
        e.rt().container_status(&late).unwrap().state,
        ContainerState::Running
    );
    let s = e.wait_exit(&late);
    assert_eq!((s.exit_code, s.reason.as_deref()), (Some(7), Some("Error")));
    // Removal frees everything of the container; a second removal is a no-op.
    e.rt().remove_container(&ok).unwrap();
    e.rt().remove_container(&ok).unwrap();
    assert_eq!(
        e.rt().container_status(&ok).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn stop_with_sigterm() {
    let e = env();
    let pod = e.pod("term");
    let id = e.start(
        &pod,
        &e.config(
            &pod,
            "c",
            "trap 'echo got-term; exit 7' TERM; echo up; while true; do sleep 0.1; done",
        ),
    );
    wait_log(&e.log_path(&pod, "c"), "stdout F up");
    e.rt().stop_container(&id, Duration::from_secs(10)).unwrap();
    let s = e.rt().container_status(&id).unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.exit_code, Some(7), "{s:?}");
    wait_log(&e.log_path(&pod, "c"), "stdout F got-term");
}

#[test]
fn sigkill_after_grace() {
    let e = env();
    let pod = e.pod("kill");
    let id = e.start(
        &pod,
        &e.config(
            &pod,
            "c",
            "trap '' TERM; echo up; while true; do sleep 0.1; done",
        ),
    );
    wait_log(&e.log_path(&pod, "c"), "stdout F up");
    e.rt()
        .stop_container(&id, Duration::from_millis(500))
        .unwrap();
    let s = e.rt().container_status(&id).unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.exit_code, Some(137), "SIGKILL: {s:?}");
}

/// Containers that ignore SIGTERM, each in its own pod, stopped at once with a grace period
/// while the blocking pool's bound for short work is 2: each stop holds a pool thread for its
/// grace, yet all run at once (a Wait is a `pool::LongWait`, outside the bound). Queued behind
/// the bound they would be killed in 3 rounds, a grace apart; the exit times the shims
/// recorded tell which.
#[test]
fn long_stops_are_not_queued_behind_the_pool_bound() {
    const N: usize = 6;
    let grace = Duration::from_secs(3);
    let e = env();
    let mut ids = Vec::new();
    for n in 0..N {
        let pod = e.pod(&format!("grace{n}"));
        let id = e.start(
            &pod,
            &e.config(
                &pod,
                "c",
                "trap '' TERM; echo up; while true; do sleep 0.1; done",
            ),
        );
        wait_log(&e.log_path(&pod, "c"), "stdout F up");
        ids.push(id);
    }
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            edged::pool::set_base(edged::pool::REST_THREADS);
        }
    }
    let _restore = Restore;
    edged::pool::set_base(2);
    let rt = e.shared();
    let peak = smol::block_on(async {
        let stops: Vec<_> = ids
            .iter()
            .map(|id| {
                let (rt, id) = (rt.clone(), id.clone());
                smol::unblock(move || rt.stop_container(&id, grace))
            })
            .collect();
        // The bound the pool had while the stops waited.
        let mut peak = 0;
        let mut timer = smol::Timer::interval(Duration::from_millis(100));
        let watch = async {
            loop {
                smol::stream::StreamExt::next(&mut timer).await;
                peak = peak.max(edged::pool::bound());
            }
        };
        let all = async {
            for s in stops {
                s.await.unwrap();
            }
        };
        smol::future::or(all, watch).await;
        peak
    });
    let exits: Vec<std::time::SystemTime> = ids
        .iter()
        .map(|id| {
            let s = e.rt().container_status(id).unwrap();
            assert_eq!(s.state, ContainerState::Exited, "{s:?}");
            assert_eq!(s.exit_code, Some(137), "killed after the grace: {s:?}");
            s.finished_at.unwrap()
        })
        .collect();
    let first = *exits.iter().min().unwrap();
    let last = *exits.iter().max().unwrap();
    let spread = last.duration_since(first).unwrap();
    assert!(
        spread < grace,
        "the stops were queued: exits {spread:?} apart with a grace of {grace:?}"
    );
    assert!(peak >= 2 + N, "bound during the stops: {peak}");
}

#[test]
fn limits_in_cgroup() {
    let e = env();
    let pod = e.pod("limits");
    let mut c = e.config(&pod, "c", "sleep 1000");
    c.resources = Resources {
        cpu_limit_millis: Some(500),
        cpu_request_millis: Some(250),
        memory_limit_bytes: Some(64 << 20),
    };
    let id = e.start(&pod, &c);
    let layout = Layout::detect();
    let cg = Layout::container_path(&pod, &id);
    let mem = layout.memory_dir(&cg);
    let read =
        |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    match &layout {
        Layout::V1(_) => {
            assert_eq!(
                read(mem.join("memory.limit_in_bytes")).trim(),
                (64u64 << 20).to_string()
            );
            let cpu = PathBuf::from("/sys/fs/cgroup/cpu").join(cg.trim_start_matches('/'));
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")).trim(), "50000");
            assert_eq!(read(cpu.join("cpu.cfs_period_us")).trim(), "100000");
            assert_eq!(read(cpu.join("cpu.shares")).trim(), "256");
        }
        Layout::V2(_) => {
            assert_eq!(
                read(mem.join("memory.max")).trim(),
                (64u64 << 20).to_string()
            );
            assert_eq!(read(mem.join("cpu.max")).trim(), "50000 100000");
        }
    }
    e.rt().stop_container(&id, Duration::ZERO).unwrap();
}

#[test]
fn oom_killed() {
    let e = env();
    let pod = e.pod("oom");
    let mut c = e.config(
        &pod,
        "c",
        "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    c.resources.memory_limit_bytes = Some(16 << 20);
    let id = e.start(&pod, &c);
    let s = e.wait_exit(&id);
    assert_eq!(s.reason.as_deref(), Some("OOMKilled"), "{s:?}");
    assert_eq!(s.exit_code, Some(137), "killed by SIGKILL");
}

#[test]
fn env_and_bind_mount_inside() {
    let e = env();
    let pod = e.pod("envmount");
    let host = e.dir.path().join("hostdata");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("hello"), "hello-from-host\n").unwrap();
    let mut c = e.config(
        &pod,
        "c",
        "echo FOO=$FOO IMAGE_ENV=$IMAGE_ENV; cat /data/hello; touch /data/x 2>/dev/null || echo ro-ok; \
         hostname; cat /etc/resolv.conf; echo err-line >&2",
    );
    c.env = vec![("FOO".into(), "bar".into())];
    c.mounts = vec![Mount {
        host_path: host.clone(),
        container_path: "/data".into(),
        read_only: true,
    }];
    let id = e.start(&pod, &c);
    let s = e.wait_exit(&id);
    assert_eq!(s.exit_code, Some(0));
    let text = wait_log(&e.log_path(&pod, "c"), "stderr F err-line");
    let out = log_lines(&text, "stdout");
    assert_eq!(
        out,
        [
            "FOO=bar IMAGE_ENV=1",
            "hello-from-host",
            "ro-ok",
            "envmount",
            "nameserver 127.0.0.53"
        ],
        "{text}"
    );
    assert!(!host.join("x").exists());
}

#[test]
fn exec_sync_output_and_timeout() {
    let e = env();
    let pod = e.pod("exec");
    let mut c = e.config(&pod, "c", "sleep 1000");
    c.env = vec![("GREETING".into(), "hi".into())];
    let id = e.start(&pod, &c);
    let cmd = |s: &str| vec!["sh".to_string(), "-c".into(), s.into()];
    let r = e
        .rt()
        .exec_sync(
            &id,
            &cmd("echo $GREETING; echo oops >&2; exit 5"),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(r.exit_code, 5);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "oops\n");
    let err = e
        .rt()
        .exec_sync(&id, &cmd("sleep 30"), Duration::from_millis(300))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    // The container itself is untouched by the killed exec.
    assert_eq!(
        e.rt().container_status(&id).unwrap().state,
        ContainerState::Running
    );
    e.rt().stop_container(&id, Duration::ZERO).unwrap();
}

/// A client's side of an exec session: what it sends and what it got.
struct ExecClient {
    stdin: Option<async_channel::Sender<Vec<u8>>>,
    resize: Option<async_channel::Sender<TermSize>>,
    stdout: async_channel::Receiver<Vec<u8>>,
    stderr: async_channel::Receiver<Vec<u8>>,
}

fn exec_session(opts: StreamOptions) -> (ExecClient, Streams) {
    let (in_tx, in_rx) = async_channel::bounded(4);
    let (out_tx, out_rx) = async_channel::bounded(4);
    let (err_tx, err_rx) = async_channel::bounded(4);
    let (rs_tx, rs_rx) = async_channel::bounded(4);
    (
        ExecClient {
            stdin: opts.stdin.then_some(in_tx),
            resize: opts.tty.then_some(rs_tx),
            stdout: out_rx,
            stderr: err_rx,
        },
        Streams {
            stdin: opts.stdin.then_some(in_rx),
            stdout: Some(out_tx),
            stderr: Some(err_tx),
            resize: opts.tty.then_some(rs_rx),
        },
    )
}

/// Reads a stream to its end.
async fn drain(rx: async_channel::Receiver<Vec<u8>>) -> String {
    let mut all = Vec::new();
    while let Ok(c) = rx.recv().await {
        all.extend_from_slice(&c);
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn interactive_exec_streams_and_exit_codes() {
    let e = env();
    let pod = e.pod("iexec");
    let id = e.start(&pod, &e.config(&pod, "c", "sleep 1000"));
    let sh = |s: &str| vec!["sh".to_string(), "-c".into(), s.into()];
    let all = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    smol::block_on(async {
        // Output on both streams, the exit code carried back.
        let (c, streams) = exec_session(StreamOptions {
            stdin: false,
            ..all
        });
        let (outcome, (out, err)) = smol::future::zip(
            exec::exec(
                e.shared(),
                id.clone(),
                sh("echo out; echo err >&2; exit 3"),
                all,
                streams,
            ),
            smol::future::zip(drain(c.stdout), drain(c.stderr)),
        )
        .await;
        assert_eq!(outcome, Outcome::Exited(3));
        assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));

        // stdin streamed in; its end is the command's end of input. 200 KiB: more than a FIFO holds.
        let (c, streams) = exec_session(all);
        let input = c.stdin.clone().unwrap();
        let feed = async move {
            for i in 0..200 {
                input.send(vec![b'a' + (i % 26) as u8; 1024]).await.unwrap();
            }
        };
        let mut c = c;
        c.stdin = None;
        let ((outcome, (out, _)), ()) = smol::future::zip(
            smol::future::zip(
                exec::exec(e.shared(), id.clone(), sh("wc -c; exit 0"), all, streams),
                smol::future::zip(drain(c.stdout), drain(c.stderr)),
            ),
            feed,
        )
        .await;
        assert_eq!(outcome, Outcome::Exited(0));
        assert_eq!(out.trim(), "204800");

        // A terminal: one stream, resized from the client.
        let tty = StreamOptions {
            tty: true,
            stderr: false,
            ..all
        };
        let (c, streams) = exec_session(tty);
        c.resize
            .as_ref()
            .unwrap()
            .send(TermSize {
                width: 100,
                height: 40,
            })
            .await
            .unwrap();
        let (outcome, out) = smol::future::zip(
            exec::exec(
                e.shared(),
                id.clone(),
                sh("while [ \"$(stty size)\" != '40 100' ]; do sleep 0.1; done; tty; exit 7"),
                tty,
                streams,
            ),
            drain(c.stdout),
        )
        .await;
        drop(c.stdin);
        assert_eq!(outcome, Outcome::Exited(7));
        assert!(out.contains("/dev/pts/"), "{out:?}");

        // A command that does not exist: 127, the runtime's words on stderr.
        let (c, streams) = exec_session(StreamOptions {
            stdin: false,
            ..all
        });
        let (outcome, (_, err)) = smol::future::zip(
            exec::exec(
                e.shared(),
                id.clone(),
                vec!["/no/such/command".into()],
                all,
                streams,
            ),
            smol::future::zip(drain(c.stdout), drain(c.stderr)),
        )
        .await;
        assert_eq!(outcome, Outcome::Exited(127), "{err}");
        assert!(err.contains("no such file"), "{err}");
    });
    // Every exec's FIFOs are gone from the bundle.
    let bundle = e.dir.path().join("runtime/containers").join(&id);
    let left: Vec<_> = std::fs::read_dir(&bundle)
        .unwrap()
        .filter_map(|d| d.ok())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("exec-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    e.rt().stop_container(&id, Duration::ZERO).unwrap();
}

#[test]
fn a_dropped_exec_session_kills_its_command() {
    let e = env();
    let pod = e.pod("dexec");
    let id = e.start(&pod, &e.config(&pod, "c", "sleep 1000"));
    let opts = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let (c, streams) = exec_session(opts);
    smol::block_on(async {
        let session = exec::exec(
            e.shared(),
            id.clone(),
            vec![
                "sh".into(),
                "-c".into(),
                "echo started; sleep 4242; echo never".into(),
            ],
            opts,
            streams,
        );
        // The client goes away once the command runs.
        let first = smol::future::or(
            async {
                session.await;
                None
            },
            async { Some(c.stdout.recv().await.unwrap()) },
        )
        .await;
        assert_eq!(first.as_deref(), Some(&b"started\n"[..]));
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    // The container's processes, from its cgroup as the host sees them.
    let running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|d| d.ok())
            .filter_map(|d| std::fs::read(d.path().join("cmdline")).ok())
            // The shell that printed "started" runs until it is killed.
            .any(|c| c.starts_with(b"sh\x00-c\x00echo started; sleep 4242"))
    };
    while running() {
        assert!(Instant::now() < deadline, "the exec still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    e.rt().stop_container(&id, Duration::ZERO).unwrap();
}

#[test]
fn pod_shares_netns_and_shim() {
    let e = env();
    let pod = e.pod("shared");
    let script = "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; sleep 1000";
    let a = e.start(&pod, &e.config(&pod, "a", script));
    let b = e.start(&pod, &e.config(&pod, "b", script));
    let la = log_lines(&wait_log(&e.log_path(&pod, "a"), "pid:["), "stdout");
    let lb = log_lines(&wait_log(&e.log_path(&pod, "b"), "pid:["), "stdout");
    assert_eq!(la[0], lb[0], "same network namespace");
    assert_eq!(la[1], lb[1], "same IPC namespace");
    assert_ne!(la[2], lb[2], "own PID namespaces");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        la[0],
        host_net.to_string_lossy(),
        "not the host's network namespace"
    );
    let addr = |id: &str| {
        std::fs::read_to_string(
            e.dir
                .path()
                .join("runtime/containers")
                .join(id)
                .join("address"),
        )
        .unwrap()
    };
    assert_eq!(addr(&a), addr(&b), "one shim for the pod");
    assert_eq!(
        shim_pids(&a).len(),
        1,
        "the pod's shim daemon, named after its first container"
    );
    assert!(
        shim_pids(&b).is_empty(),
        "no daemon of its own for the second container"
    );
    // Stopping the pod stops both and lets the shim go.
    e.rt().stop_pod_sandbox(&pod, Duration::ZERO).unwrap();
    for id in [&a, &b] {
        assert_eq!(
            e.rt().container_status(id).unwrap().state,
            ContainerState::Exited
        );
    }
    let sock = addr(&a).trim().trim_start_matches("unix://").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&sock).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!Path::new(&sock).exists(), "shim socket {sock} still there");
    assert!(
        !e.rt()
            .list_pod_sandboxes()
            .unwrap()
            .iter()
            .find(|s| s.uid == pod)
            .unwrap()
            .ready
    );
}

#[test]
fn restart_adopts_running_container() {
    let mut e = env();
    let pod = e.pod("adopt");
    let id = e.start(
        &pod,
        &e.config(
            &pod,
            "c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ),
    );
    let log = e.log_path(&pod, "c");
    wait_log(&log, "tick 2");
    let before = e.rt().container_status(&id).unwrap();
    assert_eq!(before.state, ContainerState::Running);
    // A second agent on the same state dir is refused while the first runs.
    let second = e.try_open(ShimConfig::default());
    assert_eq!(second.err().map(|e| e.kind), Some(ErrorKind::AlreadyExists));
    e.restart(shim_config("runc"));
    let after = e.rt().container_status(&id).unwrap();
    assert_eq!(after.state, ContainerState::Running);
    assert_eq!(
        after.pid, before.pid,
        "same process after the agent restart"
    );
    assert_eq!(after.name, "c");
    assert_eq!(after.started_at, before.started_at);
    let sandboxes = e.rt().list_pod_sandboxes().unwrap();
    assert!(sandboxes.iter().any(|s| s.uid == pod && s.netns.is_some()));
    // The new copier picks the output up again.
    let n = log_lines(&std::fs::read_to_string(&log).unwrap(), "stdout").len();
    wait_log(&log, &format!("tick {}", n + 5));
    // The shim publishes to the new agent's events socket.
    let events = e.rt().exit_events();
    e.rt().stop_container(&id, Duration::ZERO).unwrap();
    let ev = smol::block_on(async {
        smol::future::or(async { events.recv().await.ok() }, async {
            smol::Timer::after(Duration::from_secs(20)).await;
            None
        })
        .await
    });
    assert_eq!(ev.map(|e| e.container_id), Some(id));
}

#[test]
fn killed_shim_is_detected_and_cleaned() {
    let e = env();
    let pod = e.pod("deadshim");
    let id = e.start(&pod, &e.config(&pod, "c", "sleep 1000"));
    let events = e.rt().exit_events();
    // Seen running once, the task is watched in /proc: the shim's death must still show.
    assert_eq!(
        e.rt().container_status(&id).unwrap().state,
        ContainerState::Running
    );
    let pids = shim_pids(&id);
    assert_eq!(pids.len(), 1, "one shim daemon for {id}: {pids:?}");
    let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", pids[0])).unwrap();
    assert!(
        cg.contains(":/edged/shims\n"),
        "shim out of the agent's cgroup: {cg}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    // The shim's death shows once the kernel has it exited, all its threads gone (a pidfd
    // turns readable then; its command line empties and it reads as a zombie a bit earlier).
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = e.rt().container_status(&id).unwrap();
        if s.state != ContainerState::Running || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.reason.as_deref(), Some("ShimDied"), "{s:?}");
    let ev = events.try_recv().unwrap();
    assert_eq!(ev.container_id, id);
    let list = std::process::Command::new("runc")
        .args(["--root", "/run/containerd/runc/edged", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&id), "runc state left: {list}");
    e.rt().remove_container(&id).unwrap();
}

#[test]
fn a_container_runc_made_but_no_shim_took_is_deleted_at_restart() {
    // An agent killed while the shim ran `runc create` leaves runc's container (its state,
    // its init waiting) while the shim's Create fails (the FIFOs' reader is gone) and the
    // record says the task was never created. Made here from a created container: its record
    // set back to "not created", its shim killed.
    let mut e = env();
    let pod = e.pod("halfmade");
    let id = e
        .rt()
        .create_container(&pod, &e.config(&pod, "c", "sleep 1000"))
        .unwrap();
    let meta_path = e
        .dir
        .path()
        .join("runtime/containers")
        .join(&id)
        .join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["task_created"] = serde_json::json!(false);
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    for pid in shim_pids(&id) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    }
    let runc_list = || {
        let out = std::process::Command::new("runc")
            .args(["--root", "/run/containerd/runc/edged", "list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(
        runc_list().contains(&id),
        "runc's container is there to clean"
    );
    e.restart(shim_config("runc"));
    assert!(
        !runc_list().contains(&id),
        "runc's container left: {}",
        runc_list()
    );
    let s = e.rt().container_status(&id).unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.reason.as_deref(), Some("CreateInterrupted"), "{s:?}");
    e.rt().remove_container(&id).unwrap();
}

#[test]
fn stop_with_no_shim_address_cleans_up() {
    // A record whose bundle names no shim (its start was cut short by a power cut): stopping
    // it must not fail on the missing shim, or the pod's deletion waits for housekeeping.
    let e = env();
    let pod = e.pod("noaddress");
    let id = e.start(&pod, &e.config(&pod, "c", "sleep 1000"));
    let pid = e.rt().container_status(&id).unwrap().pid.unwrap();
    let shims = shim_pids(&id);
    std::fs::remove_file(
        e.dir
            .path()
            .join("runtime/containers")
            .join(&id)
            .join("address"),
    )
    .unwrap();
    e.rt().stop_container(&id, Duration::from_secs(1)).unwrap();
    let s = e.rt().container_status(&id).unwrap();
    assert_eq!(s.state, ContainerState::Exited);
    assert_eq!(s.reason.as_deref(), Some("ShimDied"), "{s:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the container's process {pid} outlived its cleanup"
    );
    e.rt().remove_container(&id).unwrap();
    // The shim nobody can name any more goes with the test.
    for p in shims {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL);
    }
}

#[test]
fn exit_events_arrive() {
    let e = env();
    let pod = e.pod("events");
    let events = e.rt().exit_events();
    let id = e.start(&pod, &e.config(&pod, "c", "exit 4"));
    let ev = smol::block_on(async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.container_id == id {
                break ev;
            }
        }
    });
    assert_eq!(ev.exit_code, 4);
}

#[test]
fn remove_pod_sandbox_cleans_up() {
    let e = env();
    let pod = e.pod("cleanup");
    let id = e.start(&pod, &e.config(&pod, "c", "sleep 1000"));
    let sb_dir = e.dir.path().join("runtime/sandboxes").join(&pod);
    assert!(edged::runtime::sandbox::is_pinned(&sb_dir.join("ns/net")));
    e.rt().remove_pod_sandbox(&pod).unwrap();
    assert!(!sb_dir.exists());
    assert!(!e.dir.path().join("runtime/containers").join(&id).exists());
    assert!(!e.dir.path().join("images/snapshots").join(&id).exists());
    for d in Layout::detect().dirs(&Layout::pod_path(&pod)) {
        assert!(!d.exists(), "{} left", d.display());
    }
    assert!(e
        .rt()
        .list_pod_sandboxes()
        .unwrap()
        .iter()
        .all(|s| s.uid != pod));
    e.rt().remove_pod_sandbox(&pod).unwrap();
}

#[test]
fn unknown_image_and_pod_are_refused() {
    let e = env();
    let pod = e.pod("refuse");
    let mut c = e.config(&pod, "c", "true");
    let refused = |pod: &str, c: &ContainerConfig| {
        let err = e.rt().create_container(pod, c).unwrap_err();
        (err.kind, err.stage)
    };
    assert_eq!(
        refused("no-such-pod", &c),
        (ErrorKind::NotFound, Stage::Create)
    );
    c.log_path = PathBuf::new();
    assert_eq!(refused(&pod, &c), (ErrorKind::InvalidConfig, Stage::Config));
    c.log_path = e.log_path(&pod, "c");
    assert_eq!(
        e.rt().create_container("../x", &c).unwrap_err().kind,
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        e.rt().remove_pod_sandbox("..").unwrap_err().kind,
        ErrorKind::InvalidConfig
    );
    c.image = "nope:1".into();
    assert_eq!(refused(&pod, &c), (ErrorKind::NotFound, Stage::Create));
    assert!(e.rt().list_containers().unwrap().is_empty());
}

/// Mounts the hugetlb v1 hierarchy on a hybrid host where it is missing (some crun versions
/// refuse the layout without it); returns whether it did.
fn mount_hugetlb() -> bool {
    let h = Path::new("/sys/fs/cgroup/hugetlb");
    if !matches!(Layout::detect(), Layout::V1(_)) || h.join("cgroup.procs").exists() {
        return false;
    }
    eprintln!(
        "crun test: mounting the hugetlb v1 hierarchy at {}",
        h.display()
    );
    let _ = std::fs::create_dir_all(h);
    std::process::Command::new("mount")
        .args([
            "-t",
            "cgroup",
            "-o",
            "hugetlb",
            "cgroup",
            "/sys/fs/cgroup/hugetlb",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn crun_works_too() {
    let e = env_with("crun");
    let pod = e.pod("crun");
    let mut c = e.config(&pod, "c", "echo crun-ok; exit 2");
    c.resources.memory_limit_bytes = Some(32 << 20);
    let id = match e.rt().create_container(&pod, &c) {
        Ok(id) => id,
        Err(first) => {
            eprintln!("crun failed: {first}");
            assert!(mount_hugetlb(), "crun failed plainly: {first}");
            e.rt().create_container(&pod, &c).unwrap_or_else(|again| {
                panic!("crun failed plainly: {first}; with hugetlb: {again}")
            })
        }
    };
    let cg = Layout::detect().memory_dir(&Layout::container_path(&pod, &id));
    let limit_file = match Layout::detect() {
        Layout::V1(_) => "memory.limit_in_bytes",
        Layout::V2(_) => "memory.max",
    };
    let limit = std::fs::read_to_string(cg.join(limit_file)).unwrap_or_default();
    assert_eq!(
        limit.trim(),
        (32u64 << 20).to_string(),
        "crun's cgroup {}",
        cg.display()
    );
    e.rt().start_container(&id).unwrap();
    let s = e.wait_exit(&id);
    assert_eq!(s.exit_code, Some(2));
    wait_log(&e.log_path(&pod, "c"), "stdout F crun-ok");
    assert!(e.rt().version().unwrap().contains("crun"));
}

/// Not an assertion: prints shim spawn -> process running latency (first container of a pod,
/// so each sample spawns a shim), and its parts: create (shim start + runc create) and start.
#[test]
fn bench_spawn_to_running() {
    // EDGED_BENCH_TRACE=1 shows each create's split (shim start, Create RPC).
    if std::env::var_os("EDGED_BENCH_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let e = env();
    let (mut total, mut create, mut start) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..10 {
        let pod = e.pod(&format!("bench{i}"));
        let c = e.config(&pod, "c", "sleep 1000");
        let t = Instant::now();
        let id = e.rt().create_container(&pod, &c).unwrap();
        let created = t.elapsed();
        e.rt().start_container(&id).unwrap();
        total.push(t.elapsed());
        create.push(created);
        start.push(t.elapsed() - created);
        assert_eq!(
            e.rt().container_status(&id).unwrap().state,
            ContainerState::Running
        );
        e.rt().remove_pod_sandbox(&pod).unwrap();
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "shim spawn -> running over 10 pods: median {:?} (min {:?}, max {:?}); create median {:?}, start median {:?}",
        median(&mut total),
        total[0],
        total[total.len() - 1],
        median(&mut create),
        median(&mut start)
    );
}

#[test]
fn failed_create_leaves_nothing() {
    let e = env();
    let pod = e.pod("badcmd");
    let mut c = e.config(&pod, "c", "");
    c.command = vec!["/no/such/binary".into()];
    let err = e.rt().create_container(&pod, &c).unwrap_err();
    assert!(
        err.message.contains("no such file") || err.message.contains("not found"),
        "{err}"
    );
    // The task's Create in the shim failed: the kubelet's CreateContainerError.
    assert_eq!(err.stage, Stage::Create, "{err}");
    assert_eq!(err.stage.waiting_reason().as_str(), "CreateContainerError");
    assert!(e.rt().list_containers().unwrap().is_empty());
    let left = std::fs::read_dir(e.dir.path().join("runtime/containers"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "bundle left");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shim_pids(e.dir.path().to_str().unwrap()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        shim_pids(e.dir.path().to_str().unwrap()).is_empty(),
        "idle shim left running"
    );
}

/// After a power cut nothing of /run is left (no shim, no socket, no runc state) but bundles
/// are: such containers come back as exited, never silently lost.
#[test]
fn power_cut_leftovers_reported_exited() {
    let mut e = env();
    let pod = e.pod("powercut");
    let id = e.start(&pod, &e.config(&pod, "c", "sleep 1000"));
    let pid = e.rt().container_status(&id).unwrap().pid.unwrap();
    let bundle = e.dir.path().join("runtime/containers").join(&id);
    let sock = std::fs::read_to_string(bundle.join("address")).unwrap();
    e.rt = None;
    // Simulate the cut: the shim, the process, runc's state and the socket all vanish.
    for p in shim_pids(&id).into_iter().chain([pid as i32]) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(format!("/run/containerd/runc/edged/{id}"));
    let _ = std::fs::remove_file(sock.trim().trim_start_matches("unix://"));
    e.rt = Some(Arc::new(e.open(shim_config("runc"))));
    let s = e.rt().container_status(&id).unwrap();
    assert_eq!(s.state, ContainerState::Exited, "{s:?}");
    assert!(s.reason.is_some() && s.finished_at.is_some(), "{s:?}");
    let all = e.rt().list_containers().unwrap();
    assert!(all
        .iter()
        .any(|c| c.id == id && c.state == ContainerState::Exited));
    e.rt().remove_container(&id).unwrap();
    assert!(!bundle.exists());
}

#[test]
fn security_settings_apply() {
    let e = env();
    let pod = e.pod("security");
    let mut c = e.config(
        &pod,
        "c",
        "id -u; id -g; id -G; grep CapEff /proc/self/status; touch /rootfs-write 2>/dev/null || echo ro-rootfs",
    );
    c.security.run_as_user = Some(1000);
    c.security.run_as_group = Some(2000);
    c.security.supplemental_groups = vec![3000];
    c.security.read_only_rootfs = true;
    c.security.capabilities_drop = vec!["ALL".into()];
    let id = e.start(&pod, &c);
    assert_eq!(e.wait_exit(&id).exit_code, Some(0));
    let text = wait_log(&e.log_path(&pod, "c"), "ro-rootfs");
    let out = log_lines(&text, "stdout");
    assert_eq!(out[..3], ["1000", "2000", "2000 3000"], "{text}");
    assert!(
        out[3].ends_with("0000000000000000"),
        "no capabilities: {}",
        out[3]
    );
}

#[test]
fn host_network_and_pid() {
    let e = env();
    let uid = format!("uid-{}", fastrand::u64(..));
    let sb = e
        .rt()
        .run_pod_sandbox(&PodSandboxConfig {
            uid: uid.clone(),
            namespace: "default".into(),
            name: "hostns".into(),
            hostname: "ignored".into(),
            host_network: true,
            host_pid: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(sb.netns, None);
    // Idempotent.
    e.rt()
        .run_pod_sandbox(&PodSandboxConfig {
            uid: uid.clone(),
            namespace: "default".into(),
            name: "hostns".into(),
            host_network: true,
            host_pid: true,
            ..Default::default()
        })
        .unwrap();
    let id = e.start(
        &uid,
        &e.config(
            &uid,
            "c",
            "readlink /proc/self/ns/net; readlink /proc/self/ns/pid",
        ),
    );
    assert_eq!(e.wait_exit(&id).exit_code, Some(0));
    let out = log_lines(&wait_log(&e.log_path(&uid, "c"), "pid:["), "stdout");
    let host = |k: &str| {
        std::fs::read_link(format!("/proc/self/ns/{k}"))
            .unwrap()
            .to_string_lossy()
            .to_string()
    };
    assert_eq!(out, [host("net"), host("pid")]);
}

#[test]
fn privileged_sees_host_devices() {
    let e = env();
    let pod = e.pod("priv");
    let mut c = e.config(
        &pod,
        "c",
        "grep CapEff /proc/self/status; [ -c /dev/kmsg ] && echo has-kmsg; mkdir /sys/fs/cgroup/x 2>/dev/null; echo done",
    );
    c.security.privileged = true;
    let id = e.start(&pod, &c);
    assert_eq!(e.wait_exit(&id).exit_code, Some(0));
    let out = log_lines(&wait_log(&e.log_path(&pod, "c"), "stdout F done"), "stdout");
    assert!(
        !out[0].ends_with("0000000000000000"),
        "all capabilities: {}",
        out[0]
    );
    if Path::new("/dev/kmsg").exists() {
        assert!(out.contains(&"has-kmsg".to_string()), "{out:?}");
    }
}

/// Freezes (or thaws) a process with the cgroup freezer: unlike SIGSTOP, nothing else can
/// wake it (the kernel sends SIGCONT to stopped members of newly orphaned process groups).
fn freeze(pid: i32, frozen: bool) {
    let (dir, file, on, off) = match Layout::detect() {
        Layout::V1(_) => (
            "/sys/fs/cgroup/freezer/edged-test-frozen",
            "freezer.state",
            "FROZEN",
            "THAWED",
        ),
        Layout::V2(_) => (
            "/sys/fs/cgroup/edged-test-frozen",
            "cgroup.freeze",
            "1",
            "0",
        ),
    };
    let dir = Path::new(dir);
    if frozen {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        std::fs::write(dir.join(file), on).unwrap();
    } else {
        std::fs::write(dir.join(file), off).unwrap();
        let home = Layout::detect().dirs(Layout::SHIMS);
        let home = home
            .iter()
            .find(|d| d.starts_with(dir.parent().unwrap()))
            .unwrap();
        std::fs::write(home.join("cgroup.procs"), pid.to_string()).unwrap();
        std::fs::remove_dir(dir).unwrap();
    }
}

#[test]
fn hung_shim_blocks_only_its_pod() {
    let e = env();
    let slow_pod = e.pod("hung");
    let slow = e.start(&slow_pod, &e.config(&slow_pod, "c", "sleep 1000"));
    let pids = shim_pids(&slow);
    assert_eq!(pids.len(), 1);
    freeze(pids[0], true);
    let (st, other_done_first) = std::thread::scope(|s| {
        let hung = s.spawn(|| e.rt().container_status(&slow));
        // Another pod is served meanwhile.
        let pod = e.pod("healthy");
        let id = e.start(&pod, &e.config(&pod, "c", "sleep 1000"));
        assert_eq!(
            e.rt().container_status(&id).unwrap().state,
            ContainerState::Running
        );
        let other_done_first = !hung.is_finished();
        (hung.join().unwrap().unwrap(), other_done_first)
    });
    freeze(pids[0], false);
    assert_eq!(
        st.state,
        ContainerState::Unknown,
        "a frozen shim answers nothing: {st:?}"
    );
    assert!(other_done_first, "the healthy pod waited for the hung shim");
    assert_eq!(
        e.rt().container_status(&slow).unwrap().state,
        ContainerState::Running
    );
    // Now watched in /proc, the container's state needs no answer from its shim: frozen
    // again, the shim would time out (Unknown), yet the listing says Running.
    freeze(pids[0], true);
    let st = e.rt().list_pod_containers(&slow_pod).unwrap();
    freeze(pids[0], false);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, ContainerState::Running, "{st:?}");
}

#[test]
fn created_never_started_is_removed() {
    let e = env();
    let pod = e.pod("created");
    let id = e
        .rt()
        .create_container(&pod, &e.config(&pod, "c", "echo never"))
        .unwrap();
    let s = e.rt().container_status(&id).unwrap();
    assert_eq!(s.state, ContainerState::Created);
    assert!(s.pid.is_some());
    e.rt()
        .stop_pod_sandbox(&pod, Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        e.rt().container_status(&id).unwrap().state,
        ContainerState::Exited
    );
    // Its task is gone: a start fails as the kubelet's RunContainerError.
    assert_eq!(e.rt().start_container(&id).unwrap_err().stage, Stage::Start);
    e.rt().remove_pod_sandbox(&pod).unwrap();
    assert_eq!(
        e.rt().container_status(&id).unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(shim_pids(&id).is_empty());
}

#[test]
fn pod_shim_outlives_its_first_container() {
    let e = env();
    let pod = e.pod("outlive");
    let a = e.start(&pod, &e.config(&pod, "a", "sleep 1000"));
    let b = e.start(&pod, &e.config(&pod, "b", "sleep 1000"));
    e.rt().stop_container(&a, Duration::ZERO).unwrap();
    e.rt().remove_container(&a).unwrap();
    assert_eq!(shim_pids(&a).len(), 1, "the shim still serves b");
    assert_eq!(
        e.rt().container_status(&b).unwrap().state,
        ContainerState::Running
    );
    let r = e
        .rt()
        .exec_sync(
            &b,
            &["echo".into(), "alive".into()],
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(r.stdout, b"alive\n");
    e.rt().stop_container(&b, Duration::ZERO).unwrap();
    e.rt().remove_container(&b).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shim_pids(&a).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        shim_pids(&a).is_empty(),
        "the shim went with the pod's last container"
    );
}

/// Not an assertion: prints what 10 running single-container pods cost the agent (threads,
/// RSS) and their shims (RSS).
#[test]
fn bench_footprint() {
    let e = env();
    let status = |pid: &str, key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let (threads0, rss0) = (status("self", "Threads:"), status("self", "VmRSS:"));
    let mut ids = Vec::new();
    for i in 0..10 {
        let pod = e.pod(&format!("fp{i}"));
        ids.push(e.start(&pod, &e.config(&pod, "c", "sleep 1000")));
    }
    let mut names = std::collections::BTreeMap::<String, u32>::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let n = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        *names.entry(n.trim().to_string()).or_default() += 1;
    }
    eprintln!("threads by name: {names:?}");
    let shims: Vec<i32> = ids.iter().flat_map(|id| shim_pids(id)).collect();
    assert_eq!(shims.len(), 10, "one shim per pod");
    for id in &ids {
        assert_eq!(
            e.rt().container_status(id).unwrap().state,
            ContainerState::Running
        );
    }
    let shim_rss: u64 = shims.iter().map(|p| status(&p.to_string(), "VmRSS:")).sum();
    eprintln!(
        "10 pods: agent {:+} threads (other tests run beside), +{} KiB RSS; shims {} KiB RSS in all ({} KiB each)",
        status("self", "Threads:") as i64 - threads0 as i64,
        status("self", "VmRSS:").saturating_sub(rss0),
        shim_rss,
        shim_rss / 10
    );
}
