//! The fuzz targets: every parser of input from outside the process, each as a function over
//! bytes. A target returns normally on any input (an error is a fine answer); a panic, an abort
//! or a hang is a bug. `fuzz/` runs them under libFuzzer (`scripts/fuzz`); the integration
//! suite replays their seed corpus and every crash kept in `fuzz/regressions/` on stable Rust.

use std::path::Path;

/// A fuzz target: any bytes in, never a panic out.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus and regression folders carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("pipeline", pipeline),
    ("progress", progress),
    ("lock", lock),
    ("fixture", fixture),
    ("oci_ref", oci_ref),
];

/// A pipeline file: parse and validate (template checks included), as `validate` does; and
/// the same text read as one TOML document must give the same pipeline or the same errors (a
/// large pipeline is read table by table: `model/src/pipeline/split.rs`).
pub fn pipeline(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("/nonexistent/fuzz/pipeline.toml");
        let read = format!("{:?}", phasegate_runner::load::parse(path, text));
        let whole = format!(
            "{:?}",
            phasegate_runner::load::parse_as_one_document(path, text)
        );
        assert_eq!(read, whole, "read by tables and as one document differ");
    }
}

/// A progress snapshot and its journal (the input split at the first NUL byte), folded as
/// `resume` and `status` do.
pub fn progress(data: &[u8]) {
    let (snapshot, journal) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(text) = std::str::from_utf8(snapshot) {
        let _ = phasegate_runner::persist::parse(Path::new("state.toml"), text, journal);
    }
}

/// A project's `phasegate.lock`.
pub fn lock(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = phasegate_store::Lock::parse(Path::new("phasegate.lock"), text);
    }
}

/// A plugin author's fixture file, with its limits and grants checked as `phasegate test` does.
pub fn fixture(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/fuzz/fixtures/case.toml");
    if let Ok(loaded) = phasegate_author::fixture::parse(path, text.to_owned()) {
        let f = &loaded.fixture;
        let _ = phasegate_runner::load::sandbox(path, &loaded.source, &f.limits, &f.grants);
    }
}

/// An OCI reference as `plugin add` and `plugin publish` take it.
pub fn oci_ref(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = phasegate_store::oci::OciRef::parse(text);
    }
}
