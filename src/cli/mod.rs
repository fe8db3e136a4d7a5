//! Command-line clients of the running agent's kubelet API: `edged exec` and `edged attach`.
//!
//! They go through the agent (not to the shim directly): one implementation serves these
//! commands and the HTTP API (kubectl through the cloud), and the agent owns the shim
//! connections.
//!
//! - [`exec`]: the decisions (arguments, the container, the exit code), pure.
//! - [`session`]: the WebSocket v5 client carrying them out.
//! - [`term`]: the local terminal (raw mode, window size).

pub mod exec;
pub mod session;
pub mod term;
