//! The project templates of `phasegate new`, compiled into the binary.
//!
//! Every template builds as written: the plugin's source, a helper layer for its language (the
//! Rust SDK, `phasegate_plugin.py`, `phasegate-plugin.js`, `phasegate.h`), the contract in
//! `wit/`, a `plugin.toml` with the build command, and one passing fixture.

use super::{Kind, Language, WIT};

/// The Rust SDK, vendored into Rust projects until it is published: its sources are this
/// repository's `plugin-sdk/src/`, and it reads the contract from the project's `wit/`.
const RUST_SDK_SOURCES: [(&str, &str); 6] = [
    ("lib.rs", include_str!("../../../plugin-sdk/src/lib.rs")),
    ("task.rs", include_str!("../../../plugin-sdk/src/task.rs")),
    ("gate.rs", include_str!("../../../plugin-sdk/src/gate.rs")),
    (
        "context.rs",
        include_str!("../../../plugin-sdk/src/context.rs"),
    ),
    (
        "macros.rs",
        include_str!("../../../plugin-sdk/src/macros.rs"),
    ),
    ("arena.rs", include_str!("../../../plugin-sdk/src/arena.rs")),
];
const RUST_SDK_MANIFEST: &str = r#"[package]
name = "phasegate-plugin-sdk"
version = "{{version}}"
edition = "2024"
description = "Write phasegate task and gate plugins in Rust (vendored by `phasegate new`)"
license = "Apache-2.0"

[features]
# wasm32-unknown-unknown plugins: a bump region in the initial memory, used before the standard
# allocator (see `arena` in src/lib.rs). Off for plugins with their own `#[global_allocator]`.
default = ["arena"]
arena = []

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc", "std", "bitflags"] }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

const PYTHON_HELPER: &str = include_str!("../../../sdk/python/phasegate_plugin.py");
const JS_HELPER: &str = include_str!("../../../sdk/js/phasegate-plugin.js");
const C_HELPER: &str = include_str!("../../../sdk/c/phasegate.h");

/// One file of a new project.
#[derive(Debug)]
pub struct File {
    /// Relative to the project folder.
    pub path: String,
    /// Its contents.
    pub contents: String,
}

/// The files of a new `kind` plugin named `name` in `language`.
pub fn project(name: &str, kind: Kind, language: Language) -> Vec<File> {
    let ident = name.replace('-', "_");
    let description = match kind {
        Kind::Task => "Counts the words of its input",
        Kind::Gate => {
            "Passes a phase when at most max-failures tasks failed and none wrote more than max-written bytes"
        }
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{ident}}", &ident)
            .replace("{{world}}", kind.world())
            .replace("{{description}}", description)
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
    };
    let mut files = vec![
        File {
            path: "wit/plugin.wit".into(),
            contents: WIT.to_owned(),
        },
        File {
            path: "fixtures/basic.toml".into(),
            contents: match kind {
                Kind::Task => include_str!("../templates/common/fixture-task.toml"),
                Kind::Gate => include_str!("../templates/common/fixture-gate.toml"),
            }
            .to_owned(),
        },
    ];
    if kind == Kind::Gate {
        files.push(File {
            path: "fixtures/written.toml".into(),
            contents: include_str!("../templates/common/fixture-gate-written.toml").to_owned(),
        });
    }
    let (build, output, ignore) = match language {
        Language::Rust => (
            "cargo build --release --target wasm32-wasip2".to_owned(),
            format!("target/wasm32-wasip2/release/{ident}.wasm"),
            "/target\n",
        ),
        Language::Python => (
            format!(
                "mkdir -p build && componentize-py -d wit -w {} componentize app -o build/{name}.wasm",
                kind.world()
            ),
            format!("build/{name}.wasm"),
            "/build\n__pycache__/\n",
        ),
        Language::Js => (
            format!(
                "mkdir -p build && componentize-js --wit wit --world-name {} -d http fetch-event -o build/{name}.wasm app.js",
                kind.world()
            ),
            format!("build/{name}.wasm"),
            "/build\nnode_modules/\n",
        ),
        Language::C => (
            format!(
                "mkdir -p build && ${{CC:-clang}} --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Ibindings -o build/{name}.wasm plugin.c bindings/{w}.c bindings/{w}_component_type.o -Wl,--strip-debug",
                w = kind.world()
            ),
            format!("build/{name}.wasm"),
            "/build\n/bindings\n",
        ),
    };
    files.push(File {
        path: "plugin.toml".into(),
        contents: format!(
            "# A phasegate plugin project: `phasegate build` builds it, `phasegate test` runs fixtures/.\n\
             [plugin]\nname = \"{name}\"\nkind = \"{kind}\"\nlanguage = \"{language}\"\n\n\
             [build]\n# Run with `sh -c` in this folder. {note}\ncommand = \"{build}\"\noutput = \"{output}\"\n\n\
             [test]\nfixtures = \"fixtures\"\n",
            note = match language {
                Language::C => "`phasegate build` first writes wit-bindgen's C bindings to bindings/, and turns\n# the core module clang writes into a component.",
                Language::Rust => "Without rustup's wasm32-wasip2 target, `phasegate build` uses Debian's\n# rustc-web with -Zbuild-std when it is installed.",
                _ => "",
            },
            build = build.replace('\\', "\\\\").replace('"', "\\\""),
        ),
    });
    files.push(File {
        path: ".gitignore".into(),
        contents: ignore.to_owned(),
    });
    let source = |task: &str, gate: &str| fill(if kind == Kind::Task { task } else { gate });
    match language {
        Language::Rust => {
            files.push(File {
                path: "Cargo.toml".into(),
                contents: fill(include_str!("../templates/rust/Cargo.toml")),
            });
            files.push(File {
                path: "src/lib.rs".into(),
                contents: source(
                    include_str!("../templates/rust/task.rs"),
                    include_str!("../templates/rust/gate.rs"),
                ),
            });
            files.push(File {
                path: "phasegate-plugin-sdk/Cargo.toml".into(),
                contents: fill(RUST_SDK_MANIFEST),
            });
            for (name, contents) in RUST_SDK_SOURCES {
                files.push(File {
                    path: format!("phasegate-plugin-sdk/src/{name}"),
                    contents: contents.to_owned(),
                });
            }
        }
        Language::Python => {
            files.push(File {
                path: "app.py".into(),
                contents: source(
                    include_str!("../templates/python/task.py"),
                    include_str!("../templates/python/gate.py"),
                ),
            });
            files.push(File {
                path: "phasegate_plugin.py".into(),
                contents: PYTHON_HELPER.to_owned(),
            });
        }
        Language::Js => {
            files.push(File {
                path: "app.js".into(),
                contents: source(
                    include_str!("../templates/js/task.js"),
                    include_str!("../templates/js/gate.js"),
                ),
            });
            files.push(File {
                path: "phasegate-plugin.js".into(),
                contents: JS_HELPER.to_owned(),
            });
            files.push(File {
                path: "package.json".into(),
                contents: fill(include_str!("../templates/js/package.json")),
            });
        }
        Language::C => {
            files.push(File {
                path: "plugin.c".into(),
                contents: source(
                    include_str!("../templates/c/task.c"),
                    include_str!("../templates/c/gate.c"),
                ),
            });
            files.push(File {
                path: "phasegate.h".into(),
                contents: fill(C_HELPER),
            });
        }
    }
    files
}

/// Whether `name` can name a plugin: lowercase letters, digits and `-`, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_source_is_vendored() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugin-sdk/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("plugin-sdk/src")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut vendored: Vec<String> = RUST_SDK_SOURCES
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        vendored.sort();
        assert_eq!(
            vendored, on_disk,
            "RUST_SDK_SOURCES must list every file of plugin-sdk/src"
        );
    }
}
