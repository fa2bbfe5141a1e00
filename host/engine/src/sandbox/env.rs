//! Environment grants: named host variables passed through, or fixed values. Nothing else.

use std::collections::BTreeMap;

use wasmtime_wasi::WasiCtxBuilder;

/// Adds the granted variables. A passed-through name that the host does not have is skipped.
pub fn grant(builder: &mut WasiCtxBuilder, pass: &[String], set: &BTreeMap<String, String>) {
    for name in pass {
        if let Ok(value) = std::env::var(name) {
            builder.env(name, value);
        }
    }
    for (name, value) in set {
        builder.env(name, value);
    }
}
