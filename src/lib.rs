//! edged: an edge-node agent that keeps the pods of one device running, in the spirit of
//! KubeEdge's EdgeD.
//!
//! The modules follow the subsystems (and the kubelet's package names):
//! - [`message`]: KubeEdge's beehive message, the envelope every subsystem speaks.
//! - [`api`]: the Kubernetes v1 objects (Pod, ConfigMap, Secret, PodStatus).
//! - [`metamanager`]: the LMDB store and the message handling around it.
//! - [`cloudlink`]: the link to a KubeEdge cloud (certificates, websocket, node status).
//! - [`manifest`]: the manifest directory (static pods), a source of messages.
//! - [`runtime`]: the runtime interface and its containerd shim v2 backend.
//! - [`images`]: the agent's own image store (content-addressed blobs, overlay rootfs).
//! - [`volume`]: the volume manager (emptyDir, hostPath, configMap, secret, downwardAPI,
//!   projected).
//! - [`network`]: pod networking through CNI plugins (pod IPs, hostPort).
//! - [`token`]: the token manager (service-account tokens from the cloud).
//! - [`inspect`]: `edged get`, reading the store beside a running agent.
//! - [`containerlogs`]: `edged logs` and the logs the HTTP API serves.
//! - [`server`]: the kubelet's HTTP API (health, pods, container logs, exec, attach,
//!   port-forward, stats).
//! - [`stats`]: resource usage of the node, pods and containers (summary, resource metrics).
//! - [`wsframe`]: WebSocket framing (RFC 6455), both sides: the cloud tunnel's client, the
//!   kubelet API's streaming server, `edged exec`'s client.
//! - [`reserve`]: disk space kept so that deletes work on a full disk.
//! - [`tls`]: rustls on ring, the TLS configurations the agent shares.
//! - [`cli`]: `edged exec` and `edged attach`, clients of the kubelet API.
//! - [`clock`]: the clock seam (the real clock; a manual one for tests).
//! - [`agent`]: wires the subsystems as tasks on one smol executor.

pub mod agent;
pub mod api;
pub mod cli;
pub mod clock;
pub mod cloudlink;
pub mod containerlogs;
pub mod events;
pub mod eviction;
pub mod flags;
pub mod gc;
pub mod images;
pub mod inspect;
pub mod kuberuntime;
pub mod manifest;
pub mod memory;
pub mod message;
pub mod metaclient;
pub mod metamanager;
pub mod network;
pub mod objects;
pub mod paths;
pub mod pleg;
pub mod podmanager;
pub mod pool;
pub mod prober;
pub mod reserve;
pub mod runtime;
pub mod server;
pub mod stats;
pub mod status;
pub mod tls;
pub mod token;
pub mod volume;
pub mod wsframe;
