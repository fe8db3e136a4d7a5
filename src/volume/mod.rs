//! The volume manager (the kubelet's volumemanager, for an edge node): makes a pod's volumes
//! ready before its containers start, hands the runtime the bind mounts of each container,
//! rewrites configMap/secret/downwardAPI volumes when their source changes, and removes it all
//! when the pod goes.
//!
//! Layout, as the kubelet's: `<pods_root>/<uid>/volumes/kubernetes.io~<plugin>/<name>`
//! (`empty-dir`, `configmap`, `secret`, `downward-api`; a hostPath is used where it is), and
//! `<pods_root>/<uid>/volume-subpaths/<volume>/<container>/<index>` for subPath mounts.
//!
//! - fsGroup: every volume but a hostPath group-owned by it ([`ownership`]).
//! - emptyDir: a directory (0777); `medium: Memory` is a tmpfs sized, as the kubelet does, by
//!   the smaller of `sizeLimit` and the pod's memory limit (when every container has one); the
//!   kernel's default (half the RAM) when neither is known.
//! - configMap: files on disk; secret and downwardAPI: files on a tmpfs (never on disk), all
//!   written by the [`atomic`] writer, so a refresh reaches running containers whole.
//! - projected: the files of its `configMap`, `secret`, `downwardAPI` and `serviceAccountToken`
//!   sources in one directory, written by the same atomic writer; on a tmpfs when it holds a
//!   secret or a token, else on disk.
//! - configMap, secret, downwardAPI and projected volumes are always mounted read-only, as the
//!   kubelet does since 1.10.
//!
//! Everything here is synchronous and blocking (file system and mount calls): the pod worker
//! calls it through `smol::unblock`. Every call is idempotent, so a failed one is retried
//! whole.

pub mod atomic;
mod error;
mod hostpath;
pub mod mounts;
pub mod ownership;
pub mod payload;
mod subpath;

pub use error::VolumeError;

use crate::api::{self, Kind};
use crate::runtime;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The ConfigMaps and Secrets of the pod's namespace that it refers to, keyed by name, as the
/// caller fetched them (see [`PodObjects::references`]), and the service-account tokens of its
/// projected volumes.
#[derive(Clone, Debug, Default)]
pub struct PodObjects {
    /// ConfigMaps by name.
    pub config_maps: BTreeMap<String, api::ConfigMap>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, api::Secret>,
    /// Issued tokens (the JWT) by [`token_key`] of their source.
    pub tokens: BTreeMap<TokenKey, String>,
}

/// What tells the `serviceAccountToken` sources of one pod apart: audience and lifetime.
pub type TokenKey = (String, i64);

/// The [`TokenKey`] of a `serviceAccountToken` source.
pub fn token_key(src: &api::ServiceAccountTokenProjection) -> TokenKey {
    (src.audience().to_string(), src.expiration_seconds())
}

/// A ConfigMap or Secret a pod refers to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// [`Kind::ConfigMap`] or [`Kind::Secret`].
    pub kind: Kind,
    /// Its name in the pod's namespace.
    pub name: String,
    /// True when every reference to it is `optional: true` (the pod can start without it).
    pub optional: bool,
}

impl PodObjects {
    /// The ConfigMaps and Secrets a pod refers to (volumes, env `valueFrom`, `envFrom`, of
    /// init, app and ephemeral containers), each once, sorted by kind and name.
    pub fn references(pod: &api::Pod) -> Vec<ObjectRef> {
        let mut refs: BTreeMap<(Kind, String), bool> = BTreeMap::new();
        let mut add = |kind: Kind, name: &str, optional: Option<bool>| {
            if name.is_empty() {
                return;
            }
            let opt = optional.unwrap_or(false);
            refs.entry((kind, name.to_string()))
                .and_modify(|o| *o = *o && opt)
                .or_insert(opt);
        };
        for v in &pod.spec.volumes {
            if let Some(c) = &v.config_map {
                add(Kind::ConfigMap, &c.name, c.optional);
            }
            if let Some(s) = &v.secret {
                add(Kind::Secret, &s.secret_name, s.optional);
            }
            for p in v.projected.iter().flat_map(|p| &p.sources) {
                if let Some(c) = &p.config_map {
                    add(Kind::ConfigMap, &c.name, c.optional);
                }
                if let Some(s) = &p.secret {
                    add(Kind::Secret, &s.name, s.optional);
                }
            }
        }
        let ephemeral = pod.spec.ephemeral_containers.iter().map(|e| &e.container);
        let containers = pod.spec.init_containers.iter().chain(&pod.spec.containers);
        for c in containers.chain(ephemeral) {
            for e in &c.env {
                let Some(from) = &e.value_from else { continue };
                if let Some(r) = &from.config_map_key_ref {
                    add(Kind::ConfigMap, &r.name, r.optional);
                }
                if let Some(r) = &from.secret_key_ref {
                    add(Kind::Secret, &r.name, r.optional);
                }
            }
            for f in &c.env_from {
                if let Some(r) = &f.config_map_ref {
                    add(Kind::ConfigMap, &r.name, r.optional);
                }
                if let Some(r) = &f.secret_ref {
                    add(Kind::Secret, &r.name, r.optional);
                }
            }
        }
        refs.into_iter()
            .map(|((kind, name), optional)| ObjectRef {
                kind,
                name,
                optional,
            })
            .collect()
    }
}

/// The kind of a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// `emptyDir` (disk or tmpfs).
    EmptyDir,
    /// `hostPath`, used in place.
    HostPath,
    /// `configMap`, on disk.
    ConfigMap,
    /// `secret`, on a tmpfs.
    Secret,
    /// `downwardAPI`, on a tmpfs.
    DownwardApi,
    /// `projected`, on a tmpfs when it holds a secret or a token.
    Projected,
}

impl VolumeKind {
    /// The kubelet's plugin directory name (`None` for hostPath, used in place).
    pub fn plugin_dir(self) -> Option<&'static str> {
        match self {
            VolumeKind::EmptyDir => Some("kubernetes.io~empty-dir"),
            VolumeKind::HostPath => None,
            VolumeKind::ConfigMap => Some("kubernetes.io~configmap"),
            VolumeKind::Secret => Some("kubernetes.io~secret"),
            VolumeKind::DownwardApi => Some("kubernetes.io~downward-api"),
            VolumeKind::Projected => Some("kubernetes.io~projected"),
        }
    }

    /// Volumes the agent writes from API data (always mounted read-only).
    pub fn is_api_data(self) -> bool {
        matches!(
            self,
            VolumeKind::ConfigMap
                | VolumeKind::Secret
                | VolumeKind::DownwardApi
                | VolumeKind::Projected
        )
    }
}

/// A ready volume.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadyVolume {
    /// What kind of volume it is.
    pub kind: VolumeKind,
    /// The directory (or hostPath file) containers bind-mount.
    pub path: PathBuf,
}

/// The ready volumes of a pod, by volume name ([`VolumeManager::setup`]'s answer).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodVolumes {
    /// Volume name to ready volume.
    pub volumes: BTreeMap<String, ReadyVolume>,
}

/// The volume manager of one node: owns `<root-dir>/pods`. Clones share one state; calls for
/// the same pod are serialized (the atomic writer allows one writer per volume), calls for
/// different pods run in parallel.
#[derive(Clone, Debug)]
pub struct VolumeManager {
    root: PathBuf,
    locks: Arc<Mutex<BTreeMap<String, Arc<Mutex<()>>>>>,
}

/// A volume's source, exactly one of the kinds edged supports.
enum Source<'a> {
    EmptyDir(&'a api::EmptyDirVolume),
    HostPath(&'a api::HostPathVolume),
    ConfigMap(&'a api::ConfigMapVolume),
    Secret(&'a api::SecretVolume),
    DownwardApi(&'a api::DownwardApiVolume),
    Projected(&'a api::ProjectedVolume),
}

impl Source<'_> {
    fn kind(&self) -> VolumeKind {
        match self {
            Source::EmptyDir(_) => VolumeKind::EmptyDir,
            Source::HostPath(_) => VolumeKind::HostPath,
            Source::ConfigMap(_) => VolumeKind::ConfigMap,
            Source::Secret(_) => VolumeKind::Secret,
            Source::DownwardApi(_) => VolumeKind::DownwardApi,
            Source::Projected(_) => VolumeKind::Projected,
        }
    }
}

fn source<'a>(pod: &str, vol: &'a api::Volume) -> Result<Source<'a>, VolumeError> {
    let mut found = Vec::new();
    if let Some(s) = &vol.empty_dir {
        found.push(Source::EmptyDir(s));
    }
    if let Some(s) = &vol.host_path {
        found.push(Source::HostPath(s));
    }
    if let Some(s) = &vol.config_map {
        found.push(Source::ConfigMap(s));
    }
    if let Some(s) = &vol.secret {
        found.push(Source::Secret(s));
    }
    if let Some(s) = &vol.downward_api {
        found.push(Source::DownwardApi(s));
    }
    if let Some(s) = &vol.projected {
        found.push(Source::Projected(s));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(VolumeError::spec(
            pod,
            &vol.name,
            "no volume source edged supports (emptyDir, hostPath, configMap, secret, \
             downwardAPI, projected)",
        )),
        _ => Err(VolumeError::spec(
            pod,
            &vol.name,
            "more than one volume source; give exactly one",
        )),
    }
}

/// `namespace/name` of a pod, for errors and logs.
pub fn pod_label(pod: &api::Pod) -> String {
    let ns = if pod.metadata.namespace.is_empty() {
        "default"
    } else {
        &pod.metadata.namespace
    };
    format!("{ns}/{}", pod.metadata.name)
}

/// The pod's memory limit as the kubelet counts it (max of the sum over containers and the
/// largest init container), when every container has one.
fn pod_memory_limit(pod: &api::Pod) -> Option<i64> {
    let limit = |c: &api::Container| {
        c.resources
            .limits
            .get("memory")
            .and_then(api::quantity::bytes)
    };
    let mut sum = 0i64;
    for c in &pod.spec.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    let mut max_init = 0i64;
    for c in &pod.spec.init_containers {
        max_init = max_init.max(limit(c)?);
    }
    Some(sum.max(max_init)).filter(|v| *v > 0)
}

impl VolumeManager {
    /// A manager of `pods_root` (`<root-dir>/pods`; created on first use).
    pub fn new(pods_root: PathBuf) -> Self {
        VolumeManager {
            root: pods_root,
            locks: Arc::default(),
        }
    }

    /// Runs `f` holding the pod's lock.
    fn locked<T>(&self, uid: &str, f: impl FnOnce() -> T) -> T {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(uid.to_string()).or_default().clone()
        };
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        f()
    }

    fn forget_lock(&self, uid: &str) {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(uid);
    }

    /// `<pods_root>/<uid>`.
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join(pod_uid)
    }

    fn volume_dir(&self, uid: &str, kind: VolumeKind, name: &str) -> Option<PathBuf> {
        kind.plugin_dir()
            .map(|p| self.pod_dir(uid).join("volumes").join(p).join(name))
    }

    /// Makes every volume of the pod ready, before any container starts. `objects` holds the
    /// ConfigMaps and Secrets the pod refers to; a required one missing is
    /// [`VolumeError::MissingObject`] (hold the pod in ContainerCreating and retry).
    /// Idempotent: a second call keeps what is there and rewrites changed API data.
    pub fn setup(&self, pod: &api::Pod, objects: &PodObjects) -> Result<PodVolumes, VolumeError> {
        let label = pod_label(pod);
        let uid = check_uid(&label, &pod.metadata.uid)?;
        self.locked(uid, || self.setup_locked(pod, &label, uid, objects))
    }

    fn setup_locked(
        &self,
        pod: &api::Pod,
        label: &str,
        uid: &str,
        objects: &PodObjects,
    ) -> Result<PodVolumes, VolumeError> {
        let mut out = PodVolumes::default();
        for vol in &pod.spec.volumes {
            api::validate::dns1123_label(&vol.name)
                .map_err(|r| VolumeError::spec(label, &vol.name, format!("volume name: {r}")))?;
            if out.volumes.contains_key(&vol.name) {
                return Err(VolumeError::spec(
                    label,
                    &vol.name,
                    "two volumes have this name",
                ));
            }
            let src = source(label, vol)?;
            let ready = self.setup_volume(pod, label, uid, vol, &src, objects, false)?;
            if let Some(ready) = ready {
                out.volumes.insert(vol.name.clone(), ready);
            }
        }
        Ok(out)
    }

    /// Rewrites the pod's configMap, secret and downwardAPI volumes from `objects` and the pod
    /// (after an object or pod update), each atomically. Volumes not set up yet are left to
    /// [`setup`](Self::setup). A required object missing leaves the old files and answers
    /// [`VolumeError::MissingObject`].
    pub fn refresh(&self, pod: &api::Pod, objects: &PodObjects) -> Result<(), VolumeError> {
        let label = pod_label(pod);
        let uid = check_uid(&label, &pod.metadata.uid)?;
        self.locked(uid, || {
            for vol in &pod.spec.volumes {
                let src = source(&label, vol)?;
                if src.kind().is_api_data() {
                    self.setup_volume(pod, &label, uid, vol, &src, objects, true)?;
                }
            }
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn setup_volume(
        &self,
        pod: &api::Pod,
        label: &str,
        uid: &str,
        vol: &api::Volume,
        src: &Source<'_>,
        objects: &PodObjects,
        refresh: bool,
    ) -> Result<Option<ReadyVolume>, VolumeError> {
        let name = vol.name.as_str();
        let kind = src.kind();
        if let Source::HostPath(hp) = src {
            let path = PathBuf::from(&hp.path);
            if !path.is_absolute() {
                return Err(VolumeError::path(
                    label,
                    name,
                    &hp.path,
                    "hostPath must be an absolute path",
                ));
            }
            hostpath::check(label, name, &path, hp.kind.as_deref().unwrap_or(""))?;
            return Ok(Some(ReadyVolume { kind, path }));
        }
        let Some(dir) = self.volume_dir(uid, kind, name) else {
            return Ok(None);
        };
        let io_err = |op, p: &Path, e| VolumeError::io(label, name, op, p, e);
        if refresh && fs::symlink_metadata(dir.join(atomic::DATA_DIR)).is_err() {
            return Ok(None);
        }

        // The payload first: nothing is created for a pod whose object is missing.
        let payload = api_payload(pod, label, name, src, objects)?;
        let backing = backing(pod, label, name, src)?;
        let created = !dir.exists();
        fs::create_dir_all(&dir).map_err(|e| io_err("create directory", &dir, e))?;
        let real = fs::canonicalize(&dir).map_err(|e| io_err("resolve", &dir, e))?;
        match backing {
            Backing::Tmpfs { mode, size } => {
                let mounted = mounts::is_mount_point(&real)
                    .map_err(|e| io_err("read mountinfo", &real, e))?;
                if !mounted {
                    mounts::mount_tmpfs(&real, mode, size)
                        .map_err(|e| io_err("mount tmpfs", &real, e))?;
                    tracing::info!(pod = label, volume = name, size, "tmpfs mounted");
                }
            }
            Backing::Disk { mode } => fs::set_permissions(&real, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err("chmod", &real, e))?,
        }

        let fs_group = fs_group(pod, label, name)?;
        if let Some(mut payload) = payload {
            if fs_group.is_some() {
                // The modes the ownership walk sets, so an unchanged payload reads the same.
                for f in payload.values_mut() {
                    f.mode = ownership::new_mode(f.mode, ownership::EntryKind::Other, true)
                        .unwrap_or(f.mode);
                }
            }
            let written = atomic::write(&real, &payload)
                .map_err(|e| VolumeError::io(label, name, e.op, e.path, e.source))?;
            if written && refresh {
                tracing::info!(
                    pod = label,
                    volume = name,
                    files = payload.len(),
                    "volume updated"
                );
            }
        }
        if let Some((gid, policy)) = fs_group {
            // API data is written anew by the atomic writer: always walked (small), as the
            // kubelet does; an emptyDir as its policy says.
            let (read_only, policy) = match kind.is_api_data() {
                true => (true, ownership::ChangePolicy::Always),
                false => (false, policy),
            };
            let walked = ownership::apply(&real, gid, read_only, policy)
                .map_err(|e| VolumeError::io(label, name, e.op, e.path, e.source))?;
            if walked {
                tracing::debug!(
                    pod = label,
                    volume = name,
                    fs_group = gid,
                    "volume ownership set"
                );
            }
        }
        if created {
            tracing::debug!(pod = label, volume = name, dir = %real.display(), "volume ready");
        }
        Ok(Some(ReadyVolume { kind, path: real }))
    }

    /// The bind mounts of one container (its volumeMounts): subPath mounts are resolved safely
    /// and pinned under `volume-subpaths`; `readOnly`, and every configMap, secret and
    /// downwardAPI volume, give read-only mounts.
    pub fn container_mounts(
        &self,
        pod: &api::Pod,
        container: &api::Container,
        vols: &PodVolumes,
    ) -> Result<Vec<runtime::Mount>, VolumeError> {
        let label = pod_label(pod);
        let uid = check_uid(&label, &pod.metadata.uid)?;
        self.locked(uid, || self.mounts_locked(&label, uid, container, vols))
    }

    fn mounts_locked(
        &self,
        label: &str,
        uid: &str,
        container: &api::Container,
        vols: &PodVolumes,
    ) -> Result<Vec<runtime::Mount>, VolumeError> {
        let mut out = Vec::with_capacity(container.volume_mounts.len());
        for (index, vm) in container.volume_mounts.iter().enumerate() {
            let Some(vol) = vols.volumes.get(&vm.name) else {
                return Err(VolumeError::spec(
                    label,
                    &vm.name,
                    format!(
                        "container `{}` mounts a volume the pod does not have",
                        container.name
                    ),
                ));
            };
            if !vm.mount_path.starts_with('/') {
                return Err(VolumeError::path(
                    label,
                    &vm.name,
                    &vm.mount_path,
                    format!("container `{}`: mountPath must be absolute", container.name),
                ));
            }
            let host_path = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => vol.path.clone(),
                Some(sub) => {
                    let target = self
                        .pod_dir(uid)
                        .join("volume-subpaths")
                        .join(&vm.name)
                        .join(&container.name)
                        .join(index.to_string());
                    subpath::mount(label, &vm.name, &vol.path, sub, &target)?;
                    target
                }
            };
            out.push(runtime::Mount {
                host_path,
                container_path: vm.mount_path.clone(),
                read_only: vm.read_only || vol.kind.is_api_data(),
            });
        }
        Ok(out)
    }

    /// Unmounts and removes everything of the pod (tmpfs, subPath mounts, directories).
    /// Idempotent, and fine after a reboot took the mounts. Nothing is removed while anything
    /// under the pod's directory is still mounted (that could reach into a hostPath).
    pub fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let uid = check_uid(pod_uid, pod_uid)?;
        let r = self.locked(uid, || self.teardown_locked(uid));
        if r.is_ok() {
            self.forget_lock(uid);
        }
        r
    }

    fn teardown_locked(&self, uid: &str) -> Result<(), VolumeError> {
        let dir = self.pod_dir(uid);
        let io_err = |op, p: &Path, e| VolumeError::io(uid, "", op, p, e);
        // Only a real directory directly under the pods root is cleaned: a symlink (or
        // anything resolving elsewhere) is never followed.
        match crate::paths::resolves_directly_under(&self.root, &dir) {
            Ok(true) if !dir.is_symlink() => {}
            Ok(_) => {
                return Err(io_err(
                    "remove",
                    &dir,
                    io::Error::other(
                        "not a directory directly under the pods root (a symlink?); not followed",
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("resolve", &dir, e)),
        }
        let real = match fs::canonicalize(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(VolumeError::io(uid, "", "resolve", dir, e)),
        };
        let listed = mounts::mounts_under(&real).map_err(|e| io_err("read mountinfo", &real, e))?;
        for m in &listed {
            mounts::unmount(m).map_err(|e| io_err("unmount", m, e))?;
        }
        if let Some(m) = mounts::mounts_under(&real)
            .map_err(|e| io_err("read mountinfo", &real, e))?
            .first()
        {
            return Err(io_err(
                "remove",
                &real,
                io::Error::other(format!(
                    "{} is still mounted; not removing the pod's directory",
                    m.display()
                )),
            ));
        }
        match fs::remove_dir_all(&real) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &real, e)),
        }
        tracing::info!(
            pod_uid = uid,
            unmounted = listed.len(),
            "pod volumes removed"
        );
        Ok(())
    }

    /// Pod uids that have a directory here (to find orphans after a restart).
    pub fn pod_dirs(&self) -> Result<Vec<String>, VolumeError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VolumeError::io("-", "", "read dir", &self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("-", "", "read dir", &self.root, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The pod's `fsGroup` and `fsGroupChangePolicy`, checked (`None`: no fsGroup).
fn fs_group(
    pod: &api::Pod,
    label: &str,
    volume: &str,
) -> Result<Option<(u32, ownership::ChangePolicy)>, VolumeError> {
    let Some(sc) = &pod.spec.security_context else {
        return Ok(None);
    };
    let Some(g) = sc.fs_group else {
        return Ok(None);
    };
    let gid = u32::try_from(g).map_err(|_| {
        VolumeError::spec(
            label,
            volume,
            format!("spec.securityContext.fsGroup {g} is not a group id (0 to 4294967295)"),
        )
    })?;
    let policy = ownership::change_policy(sc.fs_group_change_policy.as_deref())
        .map_err(|r| VolumeError::spec(label, volume, format!("spec.securityContext.{r}")))?;
    Ok(Some((gid, policy)))
}

/// What a volume directory lives on.
enum Backing {
    /// A directory of the agent's disk, with this mode.
    Disk { mode: u32 },
    /// A tmpfs with this root mode and size (the kernel's default when `None`).
    Tmpfs { mode: u32, size: Option<i64> },
}

/// emptyDir: disk (0777) or, for `medium: Memory`, a tmpfs sized as the kubelet sizes it (the
/// smaller of sizeLimit and the pod's memory limit). configMap: disk. secret, downwardAPI:
/// tmpfs, so their data never reaches the disk. projected: tmpfs when a source is a secret or
/// a token, else disk.
fn backing(
    pod: &api::Pod,
    label: &str,
    name: &str,
    src: &Source<'_>,
) -> Result<Backing, VolumeError> {
    let e = match src {
        Source::EmptyDir(e) => e,
        Source::ConfigMap(_) | Source::HostPath(_) => return Ok(Backing::Disk { mode: 0o755 }),
        Source::Secret(_) | Source::DownwardApi(_) => {
            return Ok(Backing::Tmpfs {
                mode: 0o755,
                size: None,
            })
        }
        Source::Projected(p) => {
            let secret = p
                .sources
                .iter()
                .any(|s| s.secret.is_some() || s.service_account_token.is_some());
            return Ok(if secret {
                Backing::Tmpfs {
                    mode: 0o755,
                    size: None,
                }
            } else {
                Backing::Disk { mode: 0o755 }
            });
        }
    };
    match e.medium.as_deref().unwrap_or("") {
        "" => return Ok(Backing::Disk { mode: 0o777 }),
        "Memory" => {}
        other => {
            return Err(VolumeError::spec(
                label,
                name,
                format!("emptyDir medium `{other}` is not supported (use \"\" or Memory)"),
            ))
        }
    }
    let limit = e
        .size_limit
        .as_ref()
        .map(|q| {
            api::quantity::bytes(q).filter(|b| *b > 0).ok_or_else(|| {
                VolumeError::spec(
                    label,
                    name,
                    format!("emptyDir sizeLimit {q} is not a positive quantity (such as 64Mi)"),
                )
            })
        })
        .transpose()?;
    let size = match (limit, pod_memory_limit(pod)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // A tmpfs's own default, as the kubelet mounts it (no mode option): world-writable and
    // sticky, as /tmp is.
    Ok(Backing::Tmpfs { mode: 0o1777, size })
}

/// The files of a configMap, secret or downwardAPI volume (`None` for other kinds). A required
/// object missing is [`VolumeError::MissingObject`].
fn api_payload(
    pod: &api::Pod,
    label: &str,
    name: &str,
    src: &Source<'_>,
    objects: &PodObjects,
) -> Result<Option<atomic::Payload>, VolumeError> {
    Ok(Some(match src {
        Source::ConfigMap(cm) => {
            let obj = objects.config_maps.get(&cm.name);
            if obj.is_none() && !cm.optional.unwrap_or(false) {
                return Err(missing(label, name, Kind::ConfigMap, &cm.name));
            }
            payload::config_map(label, name, cm, obj)?
        }
        Source::Secret(s) => {
            let obj = objects.secrets.get(&s.secret_name);
            if obj.is_none() && !s.optional.unwrap_or(false) {
                return Err(missing(label, name, Kind::Secret, &s.secret_name));
            }
            payload::secret(label, name, s, obj)?
        }
        Source::DownwardApi(d) => payload::downward_api(label, name, d, pod)?,
        Source::Projected(p) => payload::projected(label, name, p, pod, objects)?,
        Source::EmptyDir(_) | Source::HostPath(_) => return Ok(None),
    }))
}

fn missing(pod: &str, volume: &str, kind: Kind, name: &str) -> VolumeError {
    VolumeError::MissingObject {
        pod: pod.to_string(),
        volume: volume.to_string(),
        kind,
        name: name.to_string(),
    }
}

/// A pod uid becomes a directory name: it must be one plain segment.
fn check_uid<'a>(pod: &str, uid: &'a str) -> Result<&'a str, VolumeError> {
    crate::api::validate::uid(uid).map_err(|e| {
        VolumeError::spec(
            pod,
            "",
            format!("pod uid cannot name a directory (metadata.uid): {e}"),
        )
    })?;
    Ok(uid)
}
