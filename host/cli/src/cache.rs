//! `phasegate cache stats|prune`, and where a pipeline's result cache is.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use phasegate_model::error::Problem;
use phasegate_model::pipeline::Pipeline;
use phasegate_runner::cache::ResultCache;

use crate::{Exit, bad_input, relative_to_cwd};

/// Inspect or empty the result cache (the project's `.phasegate/cache`).
///
/// The project is the nearest folder from here upwards that holds `phasegate.lock`; without
/// one, the current folder.
#[derive(Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(clap::Subcommand)]
enum CacheCommand {
    /// How many results the cache holds, their size, and when they were last used.
    Stats,
    /// Remove results: every one, or those not used for a while.
    Prune {
        /// Remove only results not used for this long (e.g. `7d`, `12h`).
        #[arg(long, value_name = "DURATION", value_parser = parse_age)]
        older_than: Option<Duration>,
    },
}

fn parse_age(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; write a duration such as `7d`, `12h` or `30min`"))
}

/// The result cache a run of `pipeline` uses: its project's, else the current folder's.
pub fn of_pipeline(pipeline: &Pipeline) -> ResultCache {
    ResultCache::of_project(&project_of(pipeline))
}

/// Where a run of `pipeline` remembers the contents digests of the files its read-only grants
/// hold (`phasegate_runner::tree`): beside its result cache.
pub fn tree_memo_of(pipeline: &Pipeline) -> PathBuf {
    project_of(pipeline).join(".phasegate").join("trees")
}

fn project_of(pipeline: &Pipeline) -> PathBuf {
    pipeline.project.clone().unwrap_or_else(current)
}

fn current() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

impl CacheArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let here = current();
        let root = phasegate_store::Project::find(&here).map_or(here, |p| p.root);
        let cache = ResultCache::of_project(&root);
        let problem = |e: std::io::Error| {
            bad_input(
                Problem::new(format!("cannot read the result cache {}: {e}", relative_to_cwd(cache.dir()).display()))
                    .help("check the folder's permissions; `phasegate cache prune` (or removing the folder) empties it"),
            )
        };
        match self.command {
            CacheCommand::Stats => {
                let stats = cache.stats().map_err(problem)?;
                println!("result cache {}", relative_to_cwd(cache.dir()).display());
                if stats.old_format.entries > 0 {
                    println!(
                        "  {} result(s) in an earlier format ({}), no longer read: `phasegate cache prune` removes them",
                        stats.old_format.entries,
                        phasegate_model::units::ByteSize(stats.old_format.bytes).approx()
                    );
                }
                if stats.entries == 0 {
                    println!("  empty");
                    return Ok(Exit::Success);
                }
                println!(
                    "  {} result(s), {}",
                    stats.entries,
                    phasegate_model::units::ByteSize(stats.bytes).approx()
                );
                if let (Some(oldest), Some(newest)) = (stats.oldest, stats.newest) {
                    println!(
                        "  last used: between {} and {} ago",
                        ago(newest),
                        ago(oldest)
                    );
                }
            }
            CacheCommand::Prune { older_than } => {
                let pruned = cache.prune(older_than).map_err(problem)?;
                let which = match older_than {
                    Some(age) => format!(" not used for {}", humantime::format_duration(age)),
                    None => String::new(),
                };
                println!(
                    "removed {} result(s){which} ({}) from {}",
                    pruned.entries,
                    phasegate_model::units::ByteSize(pruned.bytes).approx(),
                    relative_to_cwd(cache.dir()).display()
                );
            }
        }
        Ok(Exit::Success)
    }
}

/// How long ago `at` was, to the second.
fn ago(at: std::time::SystemTime) -> String {
    let secs = at.elapsed().unwrap_or_default().as_secs();
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
