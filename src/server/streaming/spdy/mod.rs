//! SPDY/3.1 transport of streaming sessions (exec, attach, port-forward).

pub mod frame;
pub mod zlib;
