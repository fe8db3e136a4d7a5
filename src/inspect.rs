//! `edged get` (to be written).
