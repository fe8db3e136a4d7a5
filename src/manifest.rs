//! The manifest directory source (to be written).
