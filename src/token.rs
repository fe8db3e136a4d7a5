//! The token manager (the kubelet's `pkg/kubelet/token`, through KubeEdge's MetaManager):
//! service-account tokens for the `serviceAccountToken` sources of projected volumes.
//!
//! A token is asked of the cloud as KubeEdge's edge asks for it (`query
//! <ns>/serviceaccounttoken/<service account>` with a TokenRequest bound to the pod), kept in
//! memory and in the store (table `serviceaccounttoken`, one row per pod and source), so a pod
//! restarted while the cloud is away starts with its stored token while that is valid. A token
//! is asked for again past 80 % of its lifetime or 24 h after it was issued (the kubelet's
//! `requiresRefresh`); until a new one comes, the old one is used while it has not expired.
//! A refusal is retried with back-off. Rows go with their pod.
//!
//! Decisions ([`requires_refresh`], [`refresh_at`], [`TokenSpec::request`], [`parse_answer`])
//! are pure functions of their inputs and the time given; [`TokenManager`] carries them out.

use crate::api;
use crate::metaclient::MetaClient;
use crate::metamanager::{MetaError, UpstreamError};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

/// A token is refreshed at the latest this long after it was issued.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// `expirationSeconds` when the source gives none (the API server's default).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest `expirationSeconds` the API server accepts.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest (2^32 s), as the API server's validation has it.
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// Back-off after a refused or failed request: doubling from here...
const BACKOFF_INITIAL: Duration = Duration::from_secs(5);
/// ...up to here.
const BACKOFF_MAX: Duration = Duration::from_secs(120);
/// When to try again while the cloud is away (nothing was sent, so no back-off grows).
const OFFLINE_RETRY: Duration = Duration::from_secs(5);

/// One token a pod needs: its service account, the source's audience and lifetime, and the
/// pod it is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenSpec {
    /// The pod's namespace (the service account's too).
    pub namespace: String,
    /// The service account the token is for (`spec.serviceAccountName`).
    pub service_account: String,
    /// The pod the token is bound to: its name.
    pub pod_name: String,
    /// The pod the token is bound to: its uid.
    pub pod_uid: String,
    /// Empty: the API server's own audience.
    pub audience: String,
    /// The requested lifetime, seconds (`expirationSeconds`, 3600 unless the source says).
    pub expiration_seconds: i64,
}

/// Checks a `serviceAccountToken` source as the API server validates it: a relative `path`,
/// `expirationSeconds` between 600 and 2^32.
pub fn check_source(src: &api::ServiceAccountTokenProjection) -> Result<(), String> {
    crate::paths::check_relative(&src.path)
        .map_err(|r| format!("serviceAccountToken path `{}`: {r}", src.path))?;
    let exp = src.expiration_seconds();
    if !(MIN_EXPIRATION_SECONDS..=MAX_EXPIRATION_SECONDS).contains(&exp) {
        return Err(format!(
            "serviceAccountToken expirationSeconds {exp} must be at least \
             {MIN_EXPIRATION_SECONDS} (10 minutes) and at most {MAX_EXPIRATION_SECONDS}"
        ));
    }
    Ok(())
}

impl TokenSpec {
    /// The token `src` asks for in `pod`.
    pub fn new(pod: &api::Pod, src: &api::ServiceAccountTokenProjection) -> TokenSpec {
        TokenSpec {
            namespace: pod.metadata.namespace.clone(),
            service_account: pod.spec.service_account_name().to_string(),
            pod_name: pod.metadata.name.clone(),
            pod_uid: pod.metadata.uid.clone(),
            audience: src.audience().to_string(),
            expiration_seconds: src.expiration_seconds(),
        }
    }

    /// Every token the pod's projected volumes ask for (valid sources only: the volume
    /// manager names the invalid ones), each once.
    pub fn of_pod(pod: &api::Pod) -> Vec<TokenSpec> {
        let mut out: Vec<TokenSpec> = pod
            .spec
            .volumes
            .iter()
            .filter_map(|v| v.projected.as_ref())
            .flat_map(|p| &p.sources)
            .filter_map(|s| s.service_account_token.as_ref())
            .filter(|s| check_source(s).is_ok())
            .map(|s| TokenSpec::new(pod, s))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The TokenRequest sent up: authentication.k8s.io/v1, named after the service account,
    /// the source's audience (none: the API server's own) and lifetime, bound to the pod.
    pub fn request(&self) -> serde_json::Value {
        let audiences: Vec<&str> = if self.audience.is_empty() {
            Vec::new()
        } else {
            vec![self.audience.as_str()]
        };
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": self.service_account, "namespace": self.namespace},
            "spec": {
                "audiences": audiences,
                "expirationSeconds": self.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.pod_uid,
                },
            },
            "status": {"token": "", "expirationTimestamp": null},
        })
    }

    /// The store row: `<namespace>/<pod uid>/<service account>/<expirationSeconds>/<audience>`
    /// (the audience last: it may hold slashes).
    pub fn row_key(&self) -> String {
        row_key(
            &self.namespace,
            &self.pod_uid,
            &self.service_account,
            self.expiration_seconds,
            &self.audience,
        )
    }

    /// `ns/sa` for messages.
    fn label(&self) -> String {
        format!(
            "{}/{} (pod {})",
            self.namespace, self.service_account, self.pod_name
        )
    }
}

/// The store row of a token (see [`TokenSpec::row_key`]).
pub fn row_key(namespace: &str, pod_uid: &str, sa: &str, exp: i64, audience: &str) -> String {
    format!("{namespace}/{pod_uid}/{sa}/{exp}/{audience}")
}

/// The pod uid a store row belongs to.
pub fn row_pod_uid(row: &str) -> Option<&str> {
    row.split('/').nth(1)
}

/// An issued token.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// The JWT.
    pub token: String,
    /// `status.expirationTimestamp`.
    pub expiration: SystemTime,
    /// The lifetime it was issued for (the answer's `spec.expirationSeconds`).
    pub expiration_seconds: i64,
}

/// Reads the cloud's answer: the TokenRequest with `status.token` and
/// `status.expirationTimestamp`; the lifetime is the answer's `spec.expirationSeconds`
/// (the API server may shorten it), else the one asked for.
pub fn parse_answer(spec: &TokenSpec, answer: &serde_json::Value) -> Result<Token, String> {
    let token = answer
        .pointer("/status/token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or("the answer has no status.token")?;
    let exp = answer
        .pointer("/status/expirationTimestamp")
        .and_then(|t| t.as_str())
        .ok_or("the answer has no status.expirationTimestamp")?;
    let expiration = api::parse_rfc3339(exp)
        .ok_or_else(|| format!("status.expirationTimestamp `{exp}` is not an RFC 3339 time"))?;
    let expiration_seconds = answer
        .pointer("/spec/expirationSeconds")
        .and_then(|s| s.as_i64())
        .filter(|s| *s > 0)
        .unwrap_or(spec.expiration_seconds);
    Ok(Token {
        token: token.to_string(),
        expiration,
        expiration_seconds,
    })
}

/// When a token must be asked for again: 80 % into its lifetime, or 24 h after it was
/// issued, whichever comes first (issued = expiration − expirationSeconds).
pub fn refresh_at(t: &Token) -> SystemTime {
    let lifetime = Duration::from_secs(t.expiration_seconds.max(0) as u64);
    let issued = t.expiration.checked_sub(lifetime).unwrap_or(t.expiration);
    let at_80 = t
        .expiration
        .checked_sub(lifetime / 5)
        .unwrap_or(t.expiration);
    at_80.min(issued + MAX_TTL)
}

/// The kubelet's `requiresRefresh`: past 80 % of the lifetime or past 24 h.
pub fn requires_refresh(t: &Token, now: SystemTime) -> bool {
    now > refresh_at(t)
}

/// Whether the token can still be used.
pub fn is_valid(t: &Token, now: SystemTime) -> bool {
    now < t.expiration
}

/// A token the pod cannot have now.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenError {
    /// `ns/serviceaccount (pod name)`.
    pub what: String,
    /// Why (the cloud's answer, the link, the answer that could not be read).
    pub reason: String,
    /// When to ask again.
    pub retry_in: Duration,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service-account token for {}: {}",
            self.what, self.reason
        )
    }
}

impl std::error::Error for TokenError {}

struct Failure {
    delay: Duration,
    next_try: Instant,
    reason: String,
}

/// The token manager of the node (lives on the agent's executor).
pub struct TokenManager {
    meta: MetaClient,
    cache: RefCell<HashMap<TokenSpec, Token>>,
    failures: RefCell<HashMap<TokenSpec, Failure>>,
}

impl TokenManager {
    /// A token manager asking and storing through `meta`.
    pub fn new(meta: MetaClient) -> Self {
        TokenManager {
            meta,
            cache: RefCell::default(),
            failures: RefCell::default(),
        }
    }

    /// The token `spec` asks for: the one held (memory, else the store) while it needs no
    /// refresh; else a new one from the cloud; when that fails, the held one while it is
    /// valid, else the error (asked again after the back-off).
    pub async fn get(&self, spec: &TokenSpec) -> Result<Token, TokenError> {
        let now = SystemTime::now();
        let mut held = self.cache.borrow().get(spec).cloned();
        if held.is_none() {
            held = self.load(spec).await;
        }
        if let Some(t) = held.as_ref().filter(|t| !requires_refresh(t, now)) {
            return Ok(t.clone());
        }
        let valid = held.filter(|t| is_valid(t, now));
        if let Some(f) = self.failures.borrow().get(spec) {
            let left = f.next_try.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return valid.ok_or_else(|| TokenError {
                    what: spec.label(),
                    reason: f.reason.clone(),
                    retry_in: left,
                });
            }
        }
        let err = match self.fetch(spec).await {
            Ok(t) => {
                self.failures.borrow_mut().remove(spec);
                tracing::info!(
                    pod = %format!("{}/{}", spec.namespace, spec.pod_name),
                    service_account = %spec.service_account,
                    expires = %api::rfc3339(t.expiration),
                    refreshed = valid.is_some(),
                    "service-account token issued"
                );
                self.cache.borrow_mut().insert(spec.clone(), t.clone());
                return Ok(t);
            }
            Err(e) => e,
        };
        let (reason, retry_in) = match &err {
            MetaError::Upstream(UpstreamError::Offline) => (
                "the cloud is not connected (a token can only come from the cloud)".to_string(),
                OFFLINE_RETRY,
            ),
            other => {
                let mut failures = self.failures.borrow_mut();
                let delay = failures
                    .get(spec)
                    .map(|f| (f.delay * 2).min(BACKOFF_MAX))
                    .unwrap_or(BACKOFF_INITIAL);
                failures.insert(
                    spec.clone(),
                    Failure {
                        delay,
                        next_try: Instant::now() + delay,
                        reason: other.to_string(),
                    },
                );
                (other.to_string(), delay)
            }
        };
        tracing::warn!(
            pod = %format!("{}/{}", spec.namespace, spec.pod_name),
            service_account = %spec.service_account,
            error = %reason,
            retry_seconds = retry_in.as_secs(),
            kept_valid_token = valid.is_some(),
            "service-account token not issued"
        );
        valid.ok_or(TokenError {
            what: spec.label(),
            reason,
            retry_in,
        })
    }

    /// The stored token of `spec`, if it reads.
    async fn load(&self, spec: &TokenSpec) -> Option<Token> {
        let row = self.meta.stored_token(&spec.row_key()).await.ok()??;
        let t = parse_answer(spec, &row).ok()?;
        self.cache.borrow_mut().insert(spec.clone(), t.clone());
        Some(t)
    }

    /// Asks the cloud, reads the answer, stores it.
    async fn fetch(&self, spec: &TokenSpec) -> Result<Token, MetaError> {
        let answer = self
            .meta
            .request_token(&spec.namespace, &spec.service_account, spec.request())
            .await?;
        let t = parse_answer(spec, &answer).map_err(|reason| MetaError::BadMessage {
            resource: format!(
                "{}/serviceaccounttoken/{}",
                spec.namespace, spec.service_account
            ),
            reason,
        })?;
        if let Err(e) = self.meta.put_token(&spec.row_key(), &answer).await {
            tracing::warn!(pod = %format!("{}/{}", spec.namespace, spec.pod_name), error = %e, "cannot store the service-account token");
        }
        Ok(t)
    }

    /// Forgets the tokens of a pod that is gone, in memory and in the store.
    pub async fn remove_pod(&self, pod_uid: &str) {
        let gone = pod_uid.to_string();
        self.retain_pods(move |uid| uid != gone).await;
    }

    /// Forgets the tokens of every pod for which `keep` (given the pod uid) is false.
    pub async fn retain_pods(&self, keep: impl Fn(&str) -> bool + Clone + Send + 'static) {
        self.cache.borrow_mut().retain(|s, _| keep(&s.pod_uid));
        self.failures.borrow_mut().retain(|s, _| keep(&s.pod_uid));
        let k = keep.clone();
        match self
            .meta
            .remove_tokens(move |row| row_pod_uid(row).is_some_and(&k))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(tokens = n, "stored service-account tokens removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove stored service-account tokens"),
        }
    }

    /// Forgets the tokens of every pod not in `uids`.
    pub async fn retain_known(&self, uids: HashSet<String>) {
        self.retain_pods(move |uid| uids.contains(uid)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::metamanager::{MetaManager, Store, Upstream};
    use serde_json::json;
    use std::sync::{Arc, Mutex};
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn token(expiration: u64, lifetime: i64) -> Token {
        Token {
            token: "t".into(),
            expiration: at(expiration),
            expiration_seconds: lifetime,
        }
    }

    #[test]
    fn refresh_past_80_percent_or_24_hours() {
        let base = 1_000_000;
        // (lifetime, seconds after issue, refresh?)
        let cases = [
            (3600, 0, false),
            (3600, 2880, false), // exactly 80 %
            (3600, 2881, true),
            (3600, 3599, true),
            (600, 479, false),
            (600, 481, true),
            // A year-long token: 24 h rules.
            (365 * 86400, 86400, false),
            (365 * 86400, 86401, true),
            // 48 h: 24 h comes before 80 % (38.4 h).
            (2 * 86400, 86401, true),
        ];
        for (lifetime, after, want) in cases {
            let t = token(base + lifetime as u64, lifetime);
            assert_eq!(
                requires_refresh(&t, at(base + after)),
                want,
                "lifetime {lifetime}, {after}s after issue"
            );
        }
        let t = token(base + 3600, 3600);
        assert_eq!(refresh_at(&t), at(base + 2880));
        assert!(is_valid(&t, at(base + 3599)));
        assert!(!is_valid(&t, at(base + 3600)));
    }

    fn pod() -> api::Pod {
        let v: serde_json::Value =
            serde_yaml_ng::from_str(include_str!("../tests/fixtures/kubectl-run-pod.yaml"))
                .unwrap();
        crate::podmanager::decode_pod(&v).unwrap()
    }

    #[test]
    fn the_token_request_of_the_kube_api_access_volume() {
        let p = pod();
        let specs = TokenSpec::of_pod(&p);
        assert_eq!(specs.len(), 1, "{specs:?}");
        let s = &specs[0];
        assert_eq!(
            (
                s.service_account.as_str(),
                s.expiration_seconds,
                s.audience.as_str()
            ),
            ("default", 3607, "")
        );
        let r = s.request();
        assert_eq!(r["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(r["kind"], "TokenRequest");
        assert_eq!(
            r["metadata"],
            json!({"name": "default", "namespace": "default"})
        );
        assert_eq!(r["spec"]["audiences"], json!([]));
        assert_eq!(r["spec"]["expirationSeconds"], 3607);
        assert_eq!(
            r["spec"]["boundObjectRef"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "t",
                   "uid": "0f3c1a52-7d6e-4b8a-9f0e-2c5d1b7a9e43"})
        );
        let with_aud = TokenSpec {
            audience: "vault".into(),
            ..s.clone()
        };
        assert_eq!(with_aud.request()["spec"]["audiences"], json!(["vault"]));
        assert_eq!(
            TokenSpec {
                audience: "https://a/b".into(),
                ..s.clone()
            }
            .row_key(),
            "default/0f3c1a52-7d6e-4b8a-9f0e-2c5d1b7a9e43/default/3607/https://a/b"
        );
        assert_eq!(
            row_pod_uid(&s.row_key()),
            Some("0f3c1a52-7d6e-4b8a-9f0e-2c5d1b7a9e43")
        );
    }

    #[test]
    fn answers_are_read_or_named() {
        let s = &TokenSpec::of_pod(&pod())[0];
        let mut a = s.request();
        a["status"] = json!({"token": "eyJ.x.y", "expirationTimestamp": "2026-12-04T19:00:00Z"});
        let t = parse_answer(s, &a).unwrap();
        assert_eq!(t.token, "eyJ.x.y");
        assert_eq!(api::rfc3339(t.expiration), "2026-12-04T19:00:00Z");
        assert_eq!(t.expiration_seconds, 3607);
        // The API server may shorten the lifetime: the answer's spec counts.
        a["spec"]["expirationSeconds"] = json!(600);
        assert_eq!(parse_answer(s, &a).unwrap().expiration_seconds, 600);
        a["status"]["token"] = json!("");
        assert!(parse_answer(s, &a).unwrap_err().contains("status.token"));
        a["status"] = json!({"token": "x", "expirationTimestamp": "soon"});
        assert!(parse_answer(s, &a).unwrap_err().contains("soon"));
    }

    #[test]
    fn sources_are_checked_as_the_api_server_does() {
        let src = |exp: Option<i64>, path: &str| api::ServiceAccountTokenProjection {
            audience: None,
            expiration_seconds: exp,
            path: path.into(),
        };
        assert!(check_source(&src(None, "token")).is_ok());
        assert!(check_source(&src(Some(600), "a/token")).is_ok());
        assert!(check_source(&src(Some(599), "token"))
            .unwrap_err()
            .contains("599"));
        assert!(check_source(&src(None, "../token")).is_err());
        assert!(check_source(&src(None, "")).is_err());
    }

    /// A cloud answering token queries from a script; records what was asked.
    struct Cloud {
        online: bool,
        answers: Mutex<Vec<serde_json::Value>>,
        asked: Mutex<Vec<Message>>,
    }

    impl Upstream for Cloud {
        fn is_online(&self) -> bool {
            self.online
        }
        fn request(
            &self,
            msg: Message,
            _: Duration,
        ) -> smol::future::Boxed<Result<Message, UpstreamError>> {
            self.asked.lock().unwrap().push(msg.clone());
            let next = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { Ok(msg.response(next)) })
        }
        fn send(&self, _: Message) -> smol::future::Boxed<Result<(), UpstreamError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn manager(dir: &std::path::Path, cloud: Arc<Cloud>) -> TokenManager {
        let store = Arc::new(Store::open(dir).unwrap());
        let (tx, _rx) = async_channel::unbounded();
        TokenManager::new(MetaClient::new(Arc::new(MetaManager::new(
            store, tx, cloud,
        ))))
    }

    fn answer(s: &TokenSpec, token: &str, lifetime: i64) -> serde_json::Value {
        let mut a = s.request();
        a["spec"]["expirationSeconds"] = json!(lifetime);
        a["status"] = json!({"token": token, "expirationTimestamp":
            api::rfc3339(SystemTime::now() + Duration::from_secs(lifetime as u64))});
        a
    }

    #[test]
    fn issued_stored_reused_offline_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = TokenSpec::of_pod(&pod()).remove(0);
        let refused = json!({"ErrStatus": {"status": "Failure", "reason": "Conflict",
            "message": "the UID in the bound object reference differs", "code": 409}});
        let cloud = Arc::new(Cloud {
            online: true,
            answers: Mutex::new(vec![refused, answer(&s, "one", 3600)]),
            asked: Mutex::default(),
        });
        smol::block_on(async {
            let tm = manager(dir.path(), cloud.clone());
            let e = tm.get(&s).await.unwrap_err();
            assert!(e.to_string().contains("409 Conflict"), "{e}");
            assert_eq!(e.retry_in, BACKOFF_INITIAL);
            // In back-off: not asked again.
            assert!(tm.get(&s).await.is_err());
            assert_eq!(cloud.asked.lock().unwrap().len(), 1);
            tm.failures.borrow_mut().get_mut(&s).unwrap().next_try = Instant::now();
            assert_eq!(tm.get(&s).await.unwrap().token, "one");
            let asked = cloud.asked.lock().unwrap().clone();
            assert_eq!(asked.len(), 2);
            assert_eq!(
                asked[1].route.resource,
                "default/serviceaccounttoken/default"
            );
            assert_eq!(asked[1].route.operation, "query");
            assert_eq!(asked[1].content, s.request());
            // Held: not asked again.
            assert_eq!(tm.get(&s).await.unwrap().token, "one");
            assert_eq!(cloud.asked.lock().unwrap().len(), 2);
        });
        // A restart with the cloud away: the stored token.
        let away = Arc::new(Cloud {
            online: false,
            answers: Mutex::default(),
            asked: Mutex::default(),
        });
        smol::block_on(async {
            let tm = manager(dir.path(), away.clone());
            assert_eq!(tm.get(&s).await.unwrap().token, "one");
            let other = TokenSpec {
                pod_uid: "other".into(),
                ..s.clone()
            };
            let e = tm.get(&other).await.unwrap_err();
            assert!(e.reason.contains("not connected"), "{e}");
            tm.remove_pod(&s.pod_uid).await;
            assert!(tm.meta.stored_token(&s.row_key()).await.unwrap().is_none());
            assert!(tm.get(&s).await.is_err());
        });
    }

    #[test]
    fn a_due_token_is_replaced_and_kept_when_the_cloud_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let s = TokenSpec::of_pod(&pod()).remove(0);
        let mut due = answer(&s, "old", 600);
        // Issued 500 s ago: past 80 %.
        due["status"]["expirationTimestamp"] =
            json!(api::rfc3339(SystemTime::now() + Duration::from_secs(100)));
        let cloud = Arc::new(Cloud {
            online: true,
            answers: Mutex::new(vec![
                json!({"ErrStatus": {"reason": "InternalError", "code": 500, "message": "x"}}),
                answer(&s, "new", 600),
            ]),
            asked: Mutex::default(),
        });
        smol::block_on(async {
            let tm = manager(dir.path(), cloud.clone());
            tm.meta.put_token(&s.row_key(), &due).await.unwrap();
            // Refused: the old one, still valid, is kept.
            assert_eq!(tm.get(&s).await.unwrap().token, "old");
            tm.failures.borrow_mut().get_mut(&s).unwrap().next_try = Instant::now();
            assert_eq!(tm.get(&s).await.unwrap().token, "new");
            let stored = tm.meta.stored_token(&s.row_key()).await.unwrap().unwrap();
            assert_eq!(stored["status"]["token"], "new");
        });
    }
}
