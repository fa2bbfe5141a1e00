//! The `phasegate` command line: one file per command, a renderer for events. Glue only: the
//! library crates do the work and emit events; this crate parses arguments and renders.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use phasegate_model::error::Problem;

mod build;
mod cache;
mod completions;
mod key;
mod lines;
mod live;
mod lock;
mod locking;
mod new;
mod plugin;
mod render;
mod report;
mod resume;
mod run;
mod schema;
mod status;
mod test;
mod validate;
mod worker;

/// Default progress file, relative to the current directory.
pub const DEFAULT_STATE: &str = ".phasegate/state.toml";

const AFTER_HELP: &str = "\
Exit codes:
  0  success (every gate passed or warned; for validate: the pipeline is valid)
  1  the run failed: a gate returned `fail`
  2  bad input: the pipeline, progress file or a plugin is invalid, or the progress file
     cannot be written; nothing already recorded is lost";

#[derive(Parser)]
#[command(name = "phasegate", version, about = "Run pipelines of sandboxed WebAssembly plugins, phase by phase, behind validation gates", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunArgs),
    Resume(resume::ResumeArgs),
    Status(status::StatusArgs),
    Report(report::ReportArgs),
    Validate(validate::ValidateArgs),
    New(new::NewArgs),
    Build(build::BuildArgs),
    Cache(cache::CacheArgs),
    Test(test::TestArgs),
    Plugin(plugin::PluginArgs),
    Lock(lock::LockArgs),
    Key(key::KeyArgs),
    Worker(worker::WorkerArgs),
    Completions(completions::CompletionsArgs),
    Schema(schema::SchemaArgs),
}

/// How events and results are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable lines on stderr, a summary on stdout.
    Human,
    /// One JSON object per event on stdout (the last one is `run-finished` with the outcome).
    Json,
}

/// The outcome of a command, mapped to the documented exit codes.
pub enum Exit {
    Success,
    RunFailed,
}

/// An error that is the user's to fix (exit 2): a [`Problem`], or a message made one.
pub fn bad_input(problem: impl Into<Problem>) -> anyhow::Error {
    problem.into().into()
}

/// The exit code of a command that failed. Every error is the user's to act on — a file, a
/// plugin, the progress file, the lock — and nothing recorded is lost: 2.
fn exit_code(_error: &anyhow::Error) -> u8 {
    2
}

/// Prints an error: a [`Problem`] as `error:` lines with its `help:`; anything else (a problem
/// with context added included) as `error:` and one `caused by:` line per cause.
fn render_error(error: &anyhow::Error) {
    if let Some(problem) = error.downcast_ref::<Problem>() {
        for (i, line) in problem.to_string().lines().enumerate() {
            if i == 0 || !line.starts_with("  ") {
                eprintln!("error: {line}");
            } else {
                eprintln!("{line}");
            }
        }
    } else {
        eprintln!("error: {error}");
        for cause in error.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
    }
}

/// Reads the project's lock to change it, saying so when another phasegate command is editing
/// it and this one waits (see [`Project::edit_lock`]).
pub fn edit_lock(
    project: &phasegate_store::Project,
) -> anyhow::Result<(phasegate_store::LockEdit, phasegate_store::Lock)> {
    project
        .edit_lock(|| {
            eprintln!(
                "waiting for another phasegate command to finish editing {}",
                project.lock_path().display()
            );
        })
        .map_err(|e| bad_input(format!("{e:#}")))
}

/// Raises the soft limit on open descriptors to the hard limit. Plugins' files and sockets are
/// the process's descriptors; each instance is held to `limits.descriptors`, and the default
/// soft limit (often 1,024) would let a handful of them, together, starve the progress file,
/// the journal and the other tasks. Best effort: where it cannot be raised, it stays.
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

fn main() -> ExitCode {
    raise_descriptor_limit();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => args.run(),
        Command::Resume(args) => args.run(),
        Command::Status(args) => args.run(),
        Command::Report(args) => args.run(),
        Command::Validate(args) => args.run(),
        Command::New(args) => args.run(),
        Command::Build(args) => args.run(),
        Command::Cache(args) => args.run(),
        Command::Test(args) => args.run(),
        Command::Plugin(args) => args.run(),
        Command::Lock(args) => args.run(),
        Command::Key(args) => args.run(),
        Command::Worker(args) => args.run(),
        Command::Completions(args) => args.run(),
        Command::Schema(args) => args.run(),
    };
    match result {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::RunFailed) => ExitCode::from(1),
        Err(error) => {
            render_error(&error);
            ExitCode::from(exit_code(&error))
        }
    }
}

/// Builds the async runtime the runner uses.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Refuses a command that reads a run (status, report, resume) when its progress file is not
/// there, saying where it looked and how to start one.
pub fn require_progress(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    Err(bad_input(
        Problem::new(format!("no progress file at {}", path.display())).help(
            "a run writes one there: start it with `phasegate run PIPELINE`; for a run whose progress file is elsewhere, pass `--state FILE`",
        ),
    ))
}

/// Resolves `--state`, defaulting to [`DEFAULT_STATE`].
pub fn state_path(state: Option<PathBuf>) -> PathBuf {
    state.unwrap_or_else(|| Path::new(DEFAULT_STATE).to_path_buf())
}

/// A path as the user would type it from here: relative to the current folder when inside it.
pub fn relative_to_cwd(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from))
        .unwrap_or_else(|| path.to_owned())
}
