//! Builds every guest (plugins/*, tests/guests/*) from source with scripts/build-guests, in the
//! style of wasmtime's test-programs artifacts: a nested cargo build with its own target dir under
//! OUT_DIR, then `gen.rs` with one path constant per component. No `.wasm` is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    for dir in ["plugins", "tests/guests", "plugin-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("scripts/build-guests").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    let components = out.join("components");
    let status = Command::new("bash")
        .arg(root.join("scripts/build-guests"))
        .arg("--target-dir")
        .arg(out.join("guest-target"))
        .arg("--out")
        .arg(&components)
        .status()
        .expect("cannot run bash scripts/build-guests");
    if !status.success() {
        panic!(
            "building the guest components failed (scripts/build-guests exited with {status}); \
             the messages above say what is missing. `scripts/setup-guest-toolchain` installs the toolchain."
        );
    }

    // Core modules (crates built for wasm32-unknown-unknown) become components here; their
    // wit-bindgen metadata says which world they implement.
    for entry in std::fs::read_dir(&components)
        .expect("components dir")
        .flatten()
    {
        let path = entry.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".core.wasm"))
        else {
            continue;
        };
        let core = std::fs::read(&path).expect("read core module");
        let component = wit_component::ComponentEncoder::default()
            .module(&core)
            .and_then(|e| e.validate(true).encode())
            .unwrap_or_else(|e| panic!("cannot make a component of {}: {e:?}", path.display()));
        std::fs::write(components.join(format!("{name}.wasm")), component)
            .expect("write component");
    }

    let mut lines = Vec::new();
    let mut names = Vec::new();
    for (group, dir) in [
        ("plugins", root.join("plugins")),
        ("guests", root.join("tests/guests")),
    ] {
        for name in crate_names(&dir) {
            let file = components.join(format!("{}.wasm", name.replace('-', "_")));
            assert!(file.is_file(), "{} was not built", file.display());
            let konst = name.replace('-', "_").to_uppercase();
            lines.push(format!("/// The `{name}` component ({group})."));
            lines.push(format!(
                "pub const {konst}: &str = {:?};",
                file.display().to_string()
            ));
            names.push(konst);
        }
    }
    let all: Vec<String> = names.iter().map(|n| format!("({n:?}, {n})")).collect();
    lines.push("/// Directory holding every component.".into());
    lines.push(format!(
        "pub const COMPONENTS_DIR: &str = {:?};",
        components.display().to_string()
    ));
    lines.push("/// Every component constant, by name.".into());
    lines.push(format!(
        "pub const ALL: &[(&str, &str)] = &[{}];",
        all.join(", ")
    ));
    let code = lines.join("\n") + "\n";
    std::fs::write(out.join("gen.rs"), code).expect("write gen.rs");
}

fn crate_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("Cargo.toml")).ok())
        .filter_map(|toml| {
            toml.lines().find_map(|l| {
                l.strip_prefix("name = \"")
                    .and_then(|r| r.strip_suffix('"'))
                    .map(str::to_owned)
            })
        })
        .collect();
    names.sort();
    names
}
