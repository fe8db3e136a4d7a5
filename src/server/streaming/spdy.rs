//! SPDY/3.1 transport of streaming sessions (to be built).
