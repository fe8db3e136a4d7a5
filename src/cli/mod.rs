//! Command-line clients of the kubelet API: `edged exec`, `edged attach`.
