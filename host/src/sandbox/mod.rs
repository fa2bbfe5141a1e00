//! Per-instance sandbox: resource limits and (later) one file per capability grant.
//!
//! Deny by default: a plugin's WASI context starts with no preopened directories, no
//! environment, no network, closed stdin, and stdout/stderr captured into bounded buffers.

pub mod limits;
