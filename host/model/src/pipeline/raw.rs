//! The pipeline file as written: what serde reads, before any check. Every table denies unknown
//! keys; spans are kept where a later check needs to point at a value.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{BoundsChecks, DirMode};
use crate::outcome::FailureKind;
use crate::units::{ByteSize, HumanDuration};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPipeline {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) vars: Option<toml::Table>,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    #[serde(default)]
    pub(super) engine: RawEngine,
    #[serde(default, rename = "phase")]
    pub(super) phases: Vec<RawPhase>,
}

/// The `[engine]` table: settings of the one wasmtime engine a run uses.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawEngine {
    pub(super) bounds_checks: Option<BoundsChecks>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDefaults {
    pub(super) retries: Option<u32>,
    pub(super) retry_on: Option<Vec<FailureKind>>,
    pub(super) retry_backoff: Option<HumanDuration>,
    pub(super) concurrency: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) limits: RawLimits,
}

/// A `limits` table as written (pipeline defaults, a task, a gate, a fixture).
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLimits {
    pub(super) memory: Option<ByteSize>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) max_output: Option<ByteSize>,
    pub(super) fuel: Option<u64>,
    pub(super) table_elements: Option<Spanned<u64>>,
    pub(super) instances: Option<u64>,
    pub(super) max_log: Option<ByteSize>,
    pub(super) log_records: Option<u32>,
    pub(super) max_stack: Option<Spanned<ByteSize>>,
}

/// A `grants` table as written (a task, a gate, a fixture).
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGrants {
    #[serde(default)]
    pub(super) dirs: Vec<RawDir>,
    #[serde(default)]
    pub(super) env: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) env_set: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) net: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) http: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) deterministic: bool,
    pub(super) seed: Option<u64>,
    #[serde(default)]
    pub(super) context: bool,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDir {
    pub(super) host: Spanned<String>,
    pub(super) guest: Spanned<String>,
    #[serde(default)]
    pub(super) mode: DirMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPhase {
    pub(super) id: Spanned<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    pub(super) parallel: Option<bool>,
    pub(super) concurrency: Option<Spanned<u32>>,
    pub(super) gate: Option<RawGate>,
    #[serde(default, rename = "task")]
    pub(super) tasks: Vec<RawTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawGate {
    pub(super) plugin: Spanned<String>,
    #[serde(default)]
    pub(super) config: Option<toml::Table>,
    pub(super) timeout: Option<HumanDuration>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) grants: RawGrants,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawTask {
    pub(super) id: Spanned<String>,
    pub(super) plugin: Spanned<String>,
    #[serde(default)]
    pub(super) input: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) config: Option<toml::Table>,
    pub(super) retries: Option<u32>,
    pub(super) retry_on: Option<Vec<FailureKind>>,
    pub(super) timeout: Option<HumanDuration>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) grants: RawGrants,
}
