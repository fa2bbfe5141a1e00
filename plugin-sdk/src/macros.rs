//! `export_task!` and `export_gate!`: a plugin's one line that exports its implementation.

/// Exports a [`Task`] implementation as the component's `task` world.
///
/// The plugin's name, version and description come from its `Cargo.toml`.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        const _: () = {
            struct __PhasegateTask;
            impl $crate::bindings::task::Guest for __PhasegateTask {
                fn metadata() -> $crate::bindings::task::PluginMetadata {
                    $crate::__task_metadata::<$task>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn run(
                    request: $crate::bindings::task::TaskRequest,
                ) -> ::core::result::Result<::std::string::String, $crate::bindings::task::TaskError> {
                    $crate::__run_task::<$task>(request)
                }
            }
            $crate::bindings::task::__export_task_world!(__PhasegateTask with_types_in $crate::bindings::task);
        };
    };
}

/// Exports a [`Gate`] implementation as the component's `gate` world.
///
/// The plugin's name, version and description come from its `Cargo.toml`.
#[macro_export]
macro_rules! export_gate {
    ($gate:ty) => {
        const _: () = {
            struct __PhasegateGate;
            impl $crate::bindings::gate::Guest for __PhasegateGate {
                fn metadata() -> $crate::bindings::gate::PluginMetadata {
                    $crate::__gate_metadata::<$gate>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn check(report: $crate::bindings::gate::PhaseReport) -> $crate::bindings::gate::Verdict {
                    $crate::__check_gate::<$gate>(report)
                }
            }
            $crate::bindings::gate::__export_gate_world!(__PhasegateGate with_types_in $crate::bindings::gate);
        };
    };
}
