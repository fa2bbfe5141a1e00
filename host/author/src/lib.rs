//! Plugin authoring: project files (`plugin.toml`), templates for `phasegate new`, toolchain
//! detection, the build ([`build`]), fixtures ([`fixture`]: the format and comparisons), running
//! them ([`check`], through the engine like a pipeline) and recording them from a run
//! ([`record`]). Returns data and notes; the CLI prints.

pub mod build;
pub mod check;
pub mod codegen;
pub mod fixture;
pub mod project;
pub mod record;
pub mod stamp;
pub mod templates;
pub mod toolchain;

/// The contract, as compiled into this binary. `phasegate new` and `phasegate build` write it
/// into plugin projects so their bindings always match the host that runs them.
pub const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The languages `phasegate new` has templates for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Rust with `phasegate-plugin-sdk`, built with cargo for `wasm32-wasip2`.
    Rust,
    /// Python with `phasegate_plugin.py`, built with componentize-py.
    Python,
    /// JavaScript with `phasegate-plugin.js`, built with componentize-js.
    Js,
    /// C with `phasegate.h` over wit-bindgen's C bindings, built with clang for `wasm32-wasi`.
    C,
}

impl Language {
    /// Every language, in the order help texts list them.
    pub const ALL: [Language; 4] = [Language::Rust, Language::Python, Language::Js, Language::C];

    /// The name used on the command line and in `plugin.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::Js => "js",
            Language::C => "c",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The two plugin kinds; each is one world of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The `task` world.
    Task,
    /// The `gate` world.
    Gate,
}

impl Kind {
    /// The world's name in `wit/plugin.wit`.
    pub fn world(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Gate => "gate",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.world())
    }
}
