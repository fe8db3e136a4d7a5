//! The agent's image store (to be written).
