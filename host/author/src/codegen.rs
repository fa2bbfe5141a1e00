//! Code the build step generates: C bindings (wit-bindgen's C generator, as a library, so C
//! authors need no `wit-bindgen` CLI) and components from core modules (wit-component, with the
//! WASI preview1 reactor adapter shipped by wasmtime, so they need no `wasm-tools` either).

use anyhow::Context as _;

use super::{Kind, WIT};

/// The files of wit-bindgen's C bindings for one world: `<world>.h`, `<world>.c` and
/// `<world>_component_type.o` (the component type the linker embeds in the core module).
pub fn c_bindings(kind: Kind) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str("plugin.wit", WIT)
        .context("the built-in contract does not parse")?;
    let world = resolve
        .select_world(&[package], Some(kind.world()))
        .context("the built-in contract has no such world")?;
    let mut files = wit_bindgen_core::Files::default();
    let mut generator = wit_bindgen_c::Opts::default().build();
    generator
        .generate(&mut resolve, world, &mut files)
        .context("wit-bindgen's C generator failed")?;
    Ok(files
        .iter()
        .map(|(name, bytes)| (name.to_owned(), bytes.to_vec()))
        .collect())
}

/// Whether `bytes` is a core Wasm module (not a component).
pub fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// Turns a core module that carries its component type (as wit-bindgen's bindings embed it)
/// into a component. A module that imports WASI preview1 (wasi-libc) gets wasmtime's reactor
/// adapter, which maps those imports onto WASI 0.2.
pub fn componentize(core: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder
        .module(core)
        .context("the module carries no component type (link the `*_component_type.o` that the bindings come with)")?
        .validate(true);
    if imports_preview1(core) {
        encoder
            .adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
            .context("cannot use the WASI preview1 adapter")?;
    }
    encoder
        .encode()
        .context("cannot make a component of the module")
}

fn imports_preview1(core: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(core)
        .filter_map(Result::ok)
        .any(|payload| match payload {
            wasmparser::Payload::ImportSection(reader) => reader.into_imports().any(|import| {
                import.is_ok_and(|i| {
                    i.module
                        == wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME
                })
            }),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn c_bindings_for_both_worlds() {
        for kind in [super::Kind::Task, super::Kind::Gate] {
            let files = super::c_bindings(kind).expect("bindings");
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            let w = kind.world();
            for expected in [
                format!("{w}.h"),
                format!("{w}.c"),
                format!("{w}_component_type.o"),
            ] {
                assert!(names.contains(&expected.as_str()), "{names:?}");
            }
            if std::env::var("DUMP_C_BINDINGS").is_ok() {
                for (name, bytes) in &files {
                    std::fs::write(format!("/tmp/{name}"), bytes).expect("dump");
                }
            }
        }
    }
}
