//! WebSocket transport of streaming sessions (to be built).
