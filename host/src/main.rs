//! The `phasegate` command line. Glue only: the library does the work and emits events; the
//! modules under `cli/` parse arguments and render.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
