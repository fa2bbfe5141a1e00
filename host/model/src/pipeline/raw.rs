//! The pipeline file as written: what serde reads, before any check. Every table denies unknown
//! keys; spans are kept where a later check needs to point at a value.

use serde::Deserialize;
use toml::Spanned;

use super::BoundsChecks;
use crate::grants::RawGrants;
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
