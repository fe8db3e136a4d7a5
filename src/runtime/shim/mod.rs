//! containerd shim v2 backend (to be written).
