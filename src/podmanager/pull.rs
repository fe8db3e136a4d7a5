//! The kubelet's image manager for pods: whether to pull (imagePullPolicy), the per-image
//! back-off after a failed pull (10 s doubling to 300 s, as the kubelet's), the credentials
//! (the pod's `imagePullSecrets`, then the node's docker config), how many pulls run at once
//! (`--serialize-image-pulls`, `--max-parallel-image-pulls`), and the kubelet's events. The
//! pull itself runs on a blocking thread.

use crate::api::reason::Reason;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::{Container, Pod};
use crate::events::{EventType, PodEvent, Recorder};
use crate::images::registry::{self, creds, Client, Keyring};
use crate::images::ImageStore;
use crate::objects::ObjectManager;

/// The first back-off after a failed pull.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// The longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What to do for a container's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Use the local image.
    UseLocal,
    /// Pull it.
    Pull,
    /// Fail: not present and the policy is Never.
    NeverPull,
}

/// The kubelet's rule: Always pulls; IfNotPresent pulls when absent; Never never pulls.
pub fn decide(policy: &str, present: bool) -> Decision {
    match (policy, present) {
        ("Always", _) => Decision::Pull,
        ("Never", false) => Decision::NeverPull,
        (_, true) => Decision::UseLocal,
        (_, false) => Decision::Pull,
    }
}

/// The back-off after a failure, given the one before (`None`: the first failure).
pub fn next_backoff(prev: Option<Duration>) -> Duration {
    match prev {
        None => BACKOFF_INITIAL,
        Some(d) => (d * 2).min(BACKOFF_MAX),
    }
}

struct Failed {
    delay: Duration,
    until: Instant,
    error: String,
}

/// Why an image is not ready: the waiting reason and message.
pub type NotReady = (Reason, String);

/// Pulls images for pods.
pub struct Puller {
    store: Arc<ImageStore>,
    opts: registry::Options,
    root_dir: PathBuf,
    slots: smol::lock::Semaphore,
    failed: RefCell<HashMap<String, Failed>>,
    /// A client per set of credentials, so scoped tokens are reused across pulls (never
    /// across credentials).
    clients: RefCell<HashMap<Keyring, Arc<Client>>>,
    /// Makes room for a pull (image GC first when it would pass the high threshold).
    room: RoomFn,
}

/// See [`registry::Room`]: shared with the blocking thread a pull runs on.
pub type RoomFn = Arc<dyn Fn(u64) -> Result<(), String> + Send + Sync>;

/// How often a pull looks whether its pod was deleted.
const DELETE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Clients kept at most (one per distinct set of credentials in use).
const MAX_CLIENTS: usize = 32;

impl Puller {
    /// A puller into `store` with `opts`, `parallel` pulls at once, reading the node's
    /// docker config under `root_dir`.
    pub fn new(
        store: Arc<ImageStore>,
        opts: registry::Options,
        parallel: usize,
        root_dir: PathBuf,
        room: RoomFn,
    ) -> Puller {
        Puller {
            store,
            opts,
            root_dir,
            room,
            slots: smol::lock::Semaphore::new(parallel.clamp(1, 1 << 16)),
            failed: RefCell::new(HashMap::new()),
            clients: RefCell::new(HashMap::new()),
        }
    }

    /// Pulls `c.image` for `pod` unless it is backing off. `Ok`: the `Pulled` event's text.
    /// `deleted` says whether the pod has been deleted since: the pull is then given up (as
    /// the kubelet cancels a sync's context when its pod is killed), so a delete never waits
    /// for a pull over a slow link.
    pub async fn pull(
        &self,
        pod: &Pod,
        c: &Container,
        objects: &ObjectManager,
        events: &Recorder,
        deleted: &dyn Fn() -> bool,
    ) -> Result<String, NotReady> {
        let key = format!("{}_{}", pod.metadata.uid, c.image);
        let now = Instant::now();
        let event = |kind, reason: &str, text: String| {
            events.record(PodEvent::new(pod, Some(&c.name), kind, reason, text));
        };
        if let Some(f) = self.failed.borrow().get(&key).filter(|f| now < f.until) {
            let msg = format!("Back-off pulling image \"{}\"", c.image);
            event(EventType::Normal, "BackOff", msg.clone());
            return Err((
                Reason::ImagePullBackOff,
                format!("{msg}: ErrImagePull: {}", f.error),
            ));
        }
        let keyring = self.keyring(pod, objects).await;
        event(
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{}\"", c.image),
        );
        let waited = Instant::now();
        let _slot = self.slots.acquire().await;
        let client = {
            let mut clients = self.clients.borrow_mut();
            if clients.len() >= MAX_CLIENTS && !clients.contains_key(&keyring) {
                clients.clear();
            }
            clients
                .entry(keyring.clone())
                .or_insert_with(|| Arc::new(Client::new(self.opts.clone(), keyring)))
                .clone()
        };
        let (store, image, room) = (self.store.clone(), c.image.clone(), self.room.clone());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let pulling = smol::unblock(move || {
            // Minutes on a weak link: outside the blocking pool's bound (src/pool.rs).
            let _long = crate::pool::LongWait::begin();
            registry::pull(&store, &client, &image, &|_| {}, &|need| room(need), &stop2)
        });
        let given_up = async {
            while !deleted() {
                smol::Timer::after(DELETE_POLL).await;
            }
            // The blocking pull sees the flag at its next chunk or retry and ends by itself.
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(pod = %crate::podmanager::pod_name(pod), image = %c.image, "pull given up: the pod was deleted");
        };
        let res = match smol::future::or(async { Some(pulling.await) }, async {
            given_up.await;
            None
        })
        .await
        {
            Some(r) => r,
            None => {
                return Err((
                    Reason::ErrImagePull,
                    format!("pull of \"{}\" given up: the pod was deleted", c.image),
                ))
            }
        };
        match res {
            Ok(p) => {
                self.failed.borrow_mut().remove(&key);
                let text = format!(
                    "Successfully pulled image \"{}\" in {:.3}s ({:.3}s including waiting). Image size: {} bytes.",
                    c.image,
                    p.elapsed.as_secs_f64(),
                    waited.elapsed().as_secs_f64(),
                    p.image.size
                );
                event(EventType::Normal, "Pulled", text.clone());
                Ok(text)
            }
            Err(e) => {
                let error = e.to_string();
                let mut failed = self.failed.borrow_mut();
                // Entries idle for twice the longest back-off are forgotten (as the kubelet's
                // back-off GC does): pods deleted while backing off leave nothing behind.
                let now = Instant::now();
                failed.retain(|_, f| now < f.until + 2 * BACKOFF_MAX);
                let prev = failed.get(&key).map(|f| f.delay);
                let delay = next_backoff(prev);
                failed.insert(
                    key,
                    Failed {
                        delay,
                        until: Instant::now() + delay,
                        error: error.clone(),
                    },
                );
                event(
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image \"{}\": {error}", c.image),
                );
                Err((Reason::ErrImagePull, error))
            }
        }
    }

    /// The pod's pull secrets (a missing or malformed one is logged and skipped, as the
    /// kubelet does), then the node's docker config.
    async fn keyring(&self, pod: &Pod, objects: &ObjectManager) -> Keyring {
        let mut k = Keyring::default();
        let ns = &pod.metadata.namespace;
        for r in &pod.spec.image_pull_secrets {
            match objects.secret(ns, &r.name).await {
                Ok(Some(s)) => match s
                    .values()
                    .and_then(|v| creds::from_secret(s.kind.as_deref(), &v))
                {
                    Ok(one) => k.extend(one),
                    Err(e) => {
                        tracing::warn!(pod = %super::pod_name(pod), secret = %r.name, "ignoring an imagePullSecret: {e}")
                    }
                },
                Ok(None) => {
                    tracing::warn!(pod = %super::pod_name(pod), secret = %r.name, "imagePullSecret not found; pulling without it")
                }
                Err(e) => {
                    tracing::warn!(pod = %super::pod_name(pod), secret = %r.name, "cannot read imagePullSecret: {e}")
                }
            }
        }
        let root = self.root_dir.clone();
        k.extend(smol::unblock(move || creds::node_keyring(&root)).await);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(decide("Always", true), Decision::Pull);
        assert_eq!(decide("Always", false), Decision::Pull);
        assert_eq!(decide("IfNotPresent", true), Decision::UseLocal);
        assert_eq!(decide("IfNotPresent", false), Decision::Pull);
        assert_eq!(decide("Never", true), Decision::UseLocal);
        assert_eq!(decide("Never", false), Decision::NeverPull);
    }

    #[test]
    fn backoff_as_the_kubelet() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..7 {
            let n = next_backoff(d);
            seen.push(n.as_secs());
            d = Some(n);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
    }
}
