//! The WIT contract on the host side: the generated bindings, and who an instance works for.

use std::sync::Arc;

/// Bindings of the `task` world.
pub mod task_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "task",
        exports: { default: async },
    });
}

/// Bindings of the `gate` world (shares `types` and `host` with the task world).
pub mod gate_world {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "gate",
        exports: { default: async },
        with: {
            "phasegate:plugin/types": crate::plugin::task_world::phasegate::plugin::types,
            "phasegate:plugin/host": crate::plugin::task_world::phasegate::plugin::host,
        },
    });
}

pub use gate_world::phasegate::plugin::usage as usage_iface;
pub use task_world::phasegate::plugin::host::{self as host_iface, Level};
pub use task_world::phasegate::plugin::types as wit;

/// A recorded failure kind as the contract's `failure-kind` (what gates see).
pub fn wit_failure_kind(kind: phasegate_model::progress::FailureKind) -> wit::FailureKind {
    use phasegate_model::progress::FailureKind as K;
    match kind {
        K::Failed => wit::FailureKind::Failed,
        K::InvalidInput => wit::FailureKind::InvalidInput,
        K::InvalidConfig => wit::FailureKind::InvalidConfig,
        K::InvalidOutput => wit::FailureKind::InvalidOutput,
        K::Trap => wit::FailureKind::Trap,
        K::Timeout => wit::FailureKind::Timeout,
        K::Limit => wit::FailureKind::Limit,
        K::Host => wit::FailureKind::Host,
    }
}

/// Who an instance works for, for its log and progress events. Cheap to clone for a task.
#[derive(Clone)]
pub enum Origin {
    /// A task, named by the request it runs (shared with the caller, not copied: the names
    /// are read only when the instance logs).
    Task(Arc<wit::TaskRequest>),
    /// A gate or a `metadata` call.
    Named {
        /// Phase id.
        phase: String,
        /// What the instance is called in its phase (`gate`, `metadata`).
        task: String,
    },
}

impl Origin {
    /// Phase id.
    pub fn phase(&self) -> &str {
        match self {
            Origin::Task(request) => &request.phase,
            Origin::Named { phase, .. } => phase,
        }
    }

    /// Task id, or what else the instance is (`gate`, `metadata`).
    pub fn task(&self) -> &str {
        match self {
            Origin::Task(request) => &request.task,
            Origin::Named { task, .. } => task,
        }
    }
}
