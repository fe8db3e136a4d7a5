//! The agent: every subsystem a task on one small smol executor, talking over async-channel.
//!
//! ```text
//! manifest dir ─┐                       ┌─> pod manager (add/update/delete queues, pod workers)
//! cloud link ───┴─> MetaManager (LMDB) ─┤        ^            ^             |
//!                                        │   PLEG (relist)  prober      status manager ─> upstream
//!                                        └──────── MetaClient (the one door) <──────────┘
//! ```
//! Blocking work (shim RPCs, LMDB writes, file copies) runs through `smol::unblock`.

use crate::cloudlink::CloudLink;
use crate::flags::Flags;
use crate::gc;
use crate::images::ImageStore;
use crate::metaclient::MetaClient;
use crate::metamanager::{MetaManager, Offline, Store, Upstream};
use crate::pleg::Pleg;
use crate::podmanager::{self, PodManager};
use crate::prober::ProbeManager;
use crate::runtime::shim::{ShimConfig, ShimRuntime};
use crate::runtime::{RootfsProvider, Runtime};
use crate::status::StatusManager;
use crate::volume::VolumeManager;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How often housekeeping looks for what belongs to no pod.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(60);

/// An agent start-up failure, naming what could not be set up.
#[derive(Debug)]
pub struct AgentError(pub String);

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AgentError {}

impl AgentError {
    /// The process exit code it means: [`crate::metamanager::EXIT_STORE_DAMAGED`] for a
    /// damaged store, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.0.starts_with(STORE_DAMAGED) {
            crate::metamanager::EXIT_STORE_DAMAGED
        } else {
            1
        }
    }
}

/// How a damaged-store failure begins.
const STORE_DAMAGED: &str = "store damaged";

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> AgentError + '_ {
    move |e| AgentError(format!("{what}: {e}"))
}

/// Opens the store under `root`; with `recover`, a damaged one is moved aside first.
fn open_store(root: &std::path::Path, recover: bool) -> Result<Store, AgentError> {
    let dir = root.join("meta");
    let opened = if recover {
        Store::open_recovering(&dir)
    } else {
        Store::open(&dir).map(|s| (s, None))
    };
    match opened {
        Ok((store, Some(moved))) => {
            tracing::warn!(
                moved_to = %moved.display(),
                "store damaged: moved aside, starting with an empty store (--store-recover); objects come back from the manifests and the cloud"
            );
            Ok(store)
        }
        Ok((store, None)) => Ok(store),
        Err(e) if e.is_damage() => Err(AgentError(format!("{STORE_DAMAGED}: {e}"))),
        Err(e) => Err(AgentError(format!("store: {e}"))),
    }
}

/// Raises the soft limit of open files to the hard one: each running container holds about
/// six (its log FIFOs, log file, the copier's eventfd, pidfds of its init and shim), past the
/// usual soft limit of 1024 at some 150 containers. Returns the limit now in force.
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    #[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some targets
    let limit = soft as u64;
    limit
}

/// Runs the agent until SIGTERM or SIGINT. Running containers are left running.
pub fn run(flags: Flags) -> Result<(), AgentError> {
    let open_files = raise_open_files_limit();
    let node = flags.node_name();
    let root = flags.root_dir.clone();
    // The root dir and its trees are root's only: the store and volumes hold Secrets, layers
    // and bundles hold images' set-id files.
    for d in [root.clone(), root.join("meta"), root.join("pods")] {
        crate::paths::private_dir(&d)
            .map_err(|e| AgentError(format!("root dir: {}: {e}", d.display())))?;
    }
    let store = Arc::new(open_store(&root, flags.store_recover)?);
    for f in ["data.mdb", "lock.mdb"] {
        let p = root.join("meta").join(f);
        if let Err(e) =
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        {
            tracing::warn!(file = %p.display(), error = %e, "store file not made private");
        }
    }
    // Space kept for the writes a delete needs when the filesystem is full.
    crate::reserve::install(&root, crate::reserve::DEFAULT_SIZE);
    let (to_edged, from_meta) = async_channel::unbounded();
    // With --cloudhub-server the cloud link is MetaManager's way upstream; else none.
    let link = flags
        .link_config()
        .map_err(fail("cloud link"))?
        .map(CloudLink::new);
    let upstream: Arc<dyn Upstream> = match &link {
        Some(l) => Arc::new(l.clone()),
        None => Arc::new(Offline),
    };
    let meta = Arc::new(MetaManager::new(store, to_edged, upstream));
    let host_ip = flags
        .node_ip
        .or_else(crate::cloudlink::node::default_route_source)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    tracing::info!(node = %node, root = %root.display(), host_ip = %host_ip, open_files, "edged starting");

    let images = Arc::new(ImageStore::open(&root).map_err(fail("image store"))?);
    if let Some(dir) = &flags.image_dir {
        match images.import_dir(dir) {
            Ok(r) => {
                for (path, e) in &r.failed {
                    tracing::error!(archive = %path.display(), error = %e, "image archive not imported");
                }
                tracing::info!(imported = r.imported.len(), unchanged = r.skipped.len(), dir = %dir.display(), "image dir read");
            }
            Err(e) => tracing::error!(dir = %dir.display(), error = %e, "cannot read --image-dir"),
        }
    }
    let rootfs: Arc<dyn RootfsProvider> = images.clone();
    let network = crate::network::NetworkConfig {
        conf_dir: flags.cni_conf_dir.clone(),
        bin_dirs: crate::network::bin_dirs(&flags.cni_bin_dir),
        cache_dir: flags.cni_cache_dir.clone(),
        timeout: flags.cni_timeout.0,
    };
    match crate::network::config::load(&network.conf_dir) {
        (Some((file, list)), _) => {
            tracing::info!(file = %file.display(), network = %list.name, "pod network through CNI")
        }
        (None, problems) => tracing::warn!(
            dir = %network.conf_dir.display(),
            problems = ?problems,
            "no CNI network config (--cni-conf-dir): pods get loopback only until one is written there"
        ),
    }
    let shims = Arc::new(
        ShimRuntime::new(
            ShimConfig {
                root: root.clone(),
                shim_binary: flags.runtime_shim.clone(),
                runtime_binary: flags.runtime_binary.clone(),
                grouping: flags.shim_grouping,
                spare_shim: flags.spare_shim,
                log_max_size: flags.container_log_max_size.0,
                log_max_files: flags.container_log_max_files,
                pod_max_pids: flags.pod_max_pids,
                network: Some(network.clone()),
            },
            rootfs.clone(),
        )
        .map_err(fail("runtime"))?,
    );
    let runtime: Arc<dyn Runtime> = shims.clone();
    match runtime.version() {
        Ok(v) => tracing::info!(runtime = %v, "runtime ready"),
        Err(e) => tracing::warn!(error = %e, "runtime version unknown"),
    }
    let volumes = Arc::new(VolumeManager::new(root.join("pods")));

    let ex = Rc::new(smol::LocalExecutor::new());
    let client = MetaClient::new(meta.clone());
    let status = StatusManager::new(client.clone());
    let (probe_tx, probe_rx) = async_channel::unbounded();
    let prober = ProbeManager::new(ex.clone(), runtime.clone(), probe_tx);
    let pm = PodManager::new(
        podmanager::Config {
            node_name: node.clone(),
            host_ip,
            log_dir: flags.pod_log_dir.clone(),
            resync: Duration::from_secs(10),
            max_pods: flags.max_pods as usize,
            sysctls: flags.sysctl_allowlist().map_err(AgentError)?,
            seccomp_root: flags.seccomp_profile_root(),
            dns: crate::kuberuntime::DnsSettings {
                cluster: crate::kuberuntime::dns::ClusterDns {
                    servers: flags.cluster_dns.clone(),
                    domain: flags.cluster_domain.clone(),
                },
                resolv_conf: flags.resolv_conf.clone(),
            },
        },
        ex.clone(),
        podmanager::Parts {
            runtime: runtime.clone(),
            images: rootfs,
            volumes,
            meta: client,
            status: status.clone(),
            prober,
            puller: Some(Rc::new(podmanager::pull::Puller::new(
                images.clone(),
                flags.registry_options(),
                flags.parallel_image_pulls(),
                root.clone(),
                {
                    let (images, runtime) = (images.clone(), runtime.clone());
                    let policy = gc::image::Policy {
                        high_percent: flags.image_gc_high_threshold.0,
                        low_percent: flags.image_gc_low_threshold.0,
                        min_age: flags.image_minimum_gc_age.0,
                    };
                    Arc::new(move |need| {
                        gc::image::make_room(&images, runtime.as_ref(), &policy, need)
                    })
                },
            ))),
        },
    );
    let pleg = Rc::new(Pleg::new(runtime.clone()));
    let (pleg_tx, pleg_rx) = async_channel::unbounded();

    let container_policy = gc::container::Policy {
        min_age: flags.minimum_container_ttl_duration.0,
        max_per_pod_container: flags.maximum_dead_containers_per_container,
        max_containers: flags.maximum_dead_containers,
    };
    let image_policy = gc::image::Policy {
        high_percent: flags.image_gc_high_threshold.0,
        low_percent: flags.image_gc_low_threshold.0,
        min_age: flags.image_minimum_gc_age.0,
    };
    let eviction = crate::eviction::Config {
        thresholds: flags.eviction_hard.0.clone(),
        root_dir: root.clone(),
        log_dir: flags.pod_log_dir.clone(),
        period: crate::eviction::MONITORING_PERIOD,
    };
    let run = {
        let ex = ex.clone();
        async move {
            // The manifest directory is read first: a pod whose file went while the agent was
            // down is deleted, not started again (also when its delete cannot be stored yet).
            let mut deleted = HashSet::new();
            let source = match flags.pod_manifest_path.clone() {
                Some(dir) => {
                    let s = crate::manifest::start(dir, node.clone(), &meta).await;
                    deleted.extend(s.unstored_deletes().iter().filter_map(|r| {
                        let r = crate::message::Resource::parse(r)?;
                        (r.kind == "pod").then(|| format!("{}/{}", r.namespace, r.name))
                    }));
                    Some(s)
                }
                None => None,
            };
            // The node's pods come back from the store; then what belongs to none goes.
            pm.load_stored(&deleted).await;
            pm.housekeeping().await;
            let mut tasks = vec![
                ex.spawn(pm.clone().run(from_meta)),
                ex.spawn(pleg.run(flags.pleg_relist_period.0, pleg_tx)),
                ex.spawn(forward(pleg_rx, pm.clone(), |pm, ev| {
                    pm.on_lifecycle_event(&ev)
                })),
                ex.spawn(forward(probe_rx, pm.clone(), |pm, ev| {
                    pm.on_probe_event(&ev)
                })),
                ex.spawn(status.run(flags.status_update_frequency.0)),
                ex.spawn(pm.clone().run_housekeeping(HOUSEKEEPING_PERIOD)),
                ex.spawn(container_gc(
                    pm.clone(),
                    runtime.clone(),
                    container_policy,
                    flags.container_gc_period.0,
                )),
                ex.spawn(image_gc(
                    images,
                    runtime.clone(),
                    // With a cloud link the node status task writes the node's record.
                    link.is_none()
                        .then(|| (MetaClient::new(meta.clone()), node.clone())),
                    image_policy,
                    flags.image_gc_period.0,
                )),
                ex.spawn(crate::memory::run(crate::memory::TRIM_PERIOD)),
            ];
            tasks.push(ex.spawn(crate::server::run(
                crate::server::Config {
                    address: flags.address,
                    port: flags.port,
                    cert_dir: flags.cert_dir(),
                    log_dir: flags.pod_log_dir.clone(),
                    node_name: node.clone(),
                    root_dir: root.clone(),
                },
                meta.store().clone(),
                runtime.clone(),
                ex.clone(),
            )));
            tasks.push(ex.spawn(crate::eviction::run(eviction, pm.clone())));
            if let Some(source) = source {
                tasks.push(ex.spawn(crate::manifest::keep_reading(
                    source,
                    flags.file_check_frequency.0,
                    meta.clone(),
                )));
            }
            if let Some(l) = link {
                let client = MetaClient::new(meta.clone());
                let period = flags.node_status_update_frequency.0;
                tasks.push(ex.spawn(crate::cloudlink::run_node_status(l.clone(), client, period)));
                tasks.push(ex.spawn(crate::cloudlink::run_lease(l.clone())));
                if flags.enable_stream {
                    match crate::cloudlink::stream::config_from(
                        l.config(),
                        flags.cloudstream_server.as_deref(),
                        &kubelet_api_addr(flags.address, flags.port),
                    ) {
                        Ok(c) => tasks.push(ex.spawn(crate::cloudlink::stream::run(c))),
                        Err(e) => {
                            tracing::error!(error = %e, "--cloudstream-server: no stream tunnel")
                        }
                    }
                }
                tasks.push(ex.spawn(crate::cloudlink::run(l, meta.clone())));
            }
            wait_for_signal().await;
            // Dropping the tasks stops taking work; store writes are whole LMDB transactions,
            // and running containers are left running.
            drop(tasks);
        }
    };
    // The executor's thread only parks; the "async-io" thread alone waits on the reactor. With
    // `smol::block_on` both take turns at it, and after every reactor tick the async-io thread
    // backs off in ten short sleeps (50 µs to 10 ms): about 110 wake-ups a second at a 100 ms
    // rescan, most of the agent's CPU at rest on a 2-core VM.
    smol::future::block_on(ex.run(run));
    shims.stop_spare();
    tracing::info!("edged stopped; containers left running");
    Ok(())
}

/// Where the stream tunnel replays requests: the kubelet API on loopback (the same port on
/// 127.0.0.1 when it listens on all addresses; its own address otherwise).
fn kubelet_api_addr(address: std::net::IpAddr, port: u16) -> String {
    if address.is_unspecified() || address.is_loopback() {
        format!("127.0.0.1:{port}")
    } else {
        std::net::SocketAddr::new(address, port).to_string()
    }
}

/// Hands every event of `rx` to the pod manager.
async fn forward<T>(rx: async_channel::Receiver<T>, pm: Rc<PodManager>, f: fn(&PodManager, T)) {
    while let Ok(ev) = rx.recv().await {
        f(&pm, ev);
    }
}

async fn container_gc(
    pm: Rc<PodManager>,
    runtime: Arc<dyn Runtime>,
    policy: gc::container::Policy,
    period: Duration,
) {
    loop {
        smol::Timer::after(period).await;
        let live: HashSet<String> = pm.pod_uids().into_iter().collect();
        let rt = runtime.clone();
        smol::unblock(move || gc::container::collect(rt.as_ref(), &live, &policy)).await;
    }
}

/// Runs image GC every `period`; with `record` (the store and the node's name), records its
/// part of DiskPressure in the node's record when it changes.
async fn image_gc(
    images: Arc<ImageStore>,
    runtime: Arc<dyn Runtime>,
    record: Option<(MetaClient, String)>,
    policy: gc::image::Policy,
    period: Duration,
) {
    let mut pressure = None;
    loop {
        smol::Timer::after(period).await;
        let (imgs, rt) = (images.clone(), runtime.clone());
        let report = smol::unblock(move || gc::image::collect(&imgs, rt.as_ref(), &policy)).await;
        if pressure != Some(report.pressure) {
            pressure = Some(report.pressure);
            if let Some((meta, node)) = &record {
                let state = crate::eviction::pressure::DiskPressure::of_image_gc(images.dir());
                crate::eviction::pressure::record(meta, node, &state).await;
            }
        }
    }
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_signal() {
    use async_signal::{Signal, Signals};
    use smol::stream::StreamExt;
    match Signals::new([Signal::Term, Signal::Int]) {
        Ok(mut s) => {
            if let Some(Ok(sig)) = s.next().await {
                tracing::info!(signal = ?sig, "stopping");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch signals; running until killed");
            smol::future::pending::<()>().await;
        }
    }
}
