//! Wasmtime errors as one line a person reads.

/// Formats an error with its causes on one line.
pub fn chain(e: &wasmtime::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
