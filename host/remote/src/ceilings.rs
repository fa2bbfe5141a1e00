//! A worker's ceilings: the most a job's limits may ask for on this machine.
//!
//! A job's limits come from whoever wrote its pipeline, and a worker runs `--concurrency` jobs
//! of anyone's runs at once: a job asking for 4 GiB of memory, an hour of wall time or a
//! hundred thousand descriptors could starve the jobs beside it or take the worker down. Like a
//! grant the worker does not allow, a job whose limits exceed a ceiling is refused before
//! anything is instantiated, naming the limit, what it asked, the ceiling and the flag
//! (`--max KEY=VALUE`) that would raise it.

use std::time::Duration;

use phasegate_model::error::Problem;
use phasegate_model::pipeline::Limits;
use phasegate_model::units::{ByteSize, HumanDuration};

/// The limits `--max` can set, as `KEY=VALUE` names them.
pub const KEYS: &str =
    "memory, timeout, descriptors, max-written, max-output, max-log, max-stack, component";

/// The most a job may ask for, per limit (`None`: no ceiling).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ceilings {
    pub memory: Option<ByteSize>,
    pub timeout: Option<Duration>,
    pub descriptors: Option<u32>,
    pub max_written: Option<ByteSize>,
    pub max_output: Option<ByteSize>,
    pub max_log: Option<ByteSize>,
    /// The engine's Wasm stack (`[engine] max-stack`): native memory every running instance
    /// may commit beside its linear memory.
    pub max_stack: Option<ByteSize>,
    /// A job's component, as fetched from the bucket (compiling it costs time and memory no
    /// limit of the job bounds).
    pub component: Option<ByteSize>,
}

impl Ceilings {
    /// Sets one ceiling from `KEY=VALUE` (`--max memory=512MiB`, `--max timeout=10m`; the value
    /// `unlimited` removes it).
    pub fn set(&mut self, spec: &str) -> Result<(), String> {
        let (key, value) = spec
            .split_once('=')
            .ok_or_else(|| format!("`{spec}` is not KEY=VALUE, e.g. memory=512MiB"))?;
        let unlimited = value.trim() == "unlimited";
        let size = || ByteSize::parse(value).map(Some);
        match key.trim() {
            "memory" => self.memory = if unlimited { None } else { size()? },
            "max-written" => self.max_written = if unlimited { None } else { size()? },
            "max-output" => self.max_output = if unlimited { None } else { size()? },
            "max-log" => self.max_log = if unlimited { None } else { size()? },
            "max-stack" => self.max_stack = if unlimited { None } else { size()? },
            "component" => self.component = if unlimited { None } else { size()? },
            "timeout" => {
                self.timeout = if unlimited {
                    None
                } else {
                    Some(HumanDuration::parse(value)?.0)
                }
            }
            "descriptors" => {
                self.descriptors = if unlimited {
                    None
                } else {
                    Some(value.trim().parse().map_err(|_| {
                        format!("`{value}` is not a number of descriptors, e.g. descriptors=1024")
                    })?)
                }
            }
            other => {
                return Err(format!(
                    "`{other}` is not a limit `--max` sets; it sets {KEYS}"
                ));
            }
        }
        Ok(())
    }

    /// Whether a job's `limits` and its engine's `max_stack` stay under every ceiling; the
    /// first one over is a problem naming it and the flag that would let the job run here.
    pub fn check(&self, worker: &str, limits: &Limits, max_stack: ByteSize) -> Result<(), Problem> {
        let over = |key: &str, asked: String, ceiling: String| {
            let setting = if key == "max-stack" {
                "the pipeline's `[engine] max-stack`".to_owned()
            } else {
                format!("the task's `limits.{key}`")
            };
            Problem::new(format!(
                "worker `{worker}` refuses the job: it asks for {key} {asked}, and this worker allows at most {ceiling}"
            ))
            .help(format!(
                "lower {setting}, start the worker with `--max {key}={}`, or run the task elsewhere",
                asked.replace(' ', "")
            ))
        };
        let sizes = [
            ("memory", limits.memory, self.memory),
            ("max-written", limits.max_written, self.max_written),
            ("max-output", limits.max_output, self.max_output),
            ("max-log", limits.max_log, self.max_log),
            ("max-stack", max_stack, self.max_stack),
        ];
        for (key, asked, ceiling) in sizes {
            if let Some(ceiling) = ceiling.filter(|c| asked > *c) {
                return Err(over(key, asked.to_string(), ceiling.to_string()));
            }
        }
        if let Some(ceiling) = self.timeout.filter(|c| limits.timeout > *c) {
            return Err(over(
                "timeout",
                HumanDuration(limits.timeout).to_string(),
                HumanDuration(ceiling).to_string(),
            ));
        }
        if let Some(ceiling) = self.descriptors.filter(|c| limits.descriptors > *c) {
            return Err(over(
                "descriptors",
                limits.descriptors.to_string(),
                ceiling.to_string(),
            ));
        }
        Ok(())
    }

    /// The problem with a component of `size` bytes, if it is over its ceiling.
    pub fn component_over(&self, worker: &str, digest: &str, size: u64) -> Option<Problem> {
        let ceiling = self.component.filter(|c| size > c.0)?;
        Some(
            Problem::new(format!(
                "worker `{worker}` refuses component {digest}: it is over this worker's ceiling of {ceiling} for a component"
            ))
            .help("start the worker with a larger `--max component=SIZE`, or run the task elsewhere"),
        )
    }

    /// The problem with a context of `size` bytes, if it is over the `memory` ceiling (the guest
    /// holds its context in its memory).
    pub fn context_over(&self, worker: &str, digest: &str, size: u64) -> Option<Problem> {
        let ceiling = self.memory.filter(|c| size > c.0)?;
        Some(
            Problem::new(format!(
                "worker `{worker}` refuses context {digest}: it is larger than this worker's memory ceiling of {ceiling}"
            ))
            .help("start the worker with a larger `--max memory=SIZE`, or grant the task less of the context"),
        )
    }

    /// What a job may ask for at most, for the worker's first line.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut size = |key: &str, value: Option<ByteSize>| {
            if let Some(v) = value {
                parts.push(format!("{key} {v}"));
            }
        };
        size("memory", self.memory);
        size("max-written", self.max_written);
        size("max-output", self.max_output);
        size("max-log", self.max_log);
        size("max-stack", self.max_stack);
        size("component", self.component);
        if let Some(t) = self.timeout {
            parts.push(format!("timeout {}", HumanDuration(t)));
        }
        if let Some(d) = self.descriptors {
            parts.push(format!("descriptors {d}"));
        }
        if parts.is_empty() {
            "no ceilings".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: ByteSize = phasegate_model::pipeline::DEFAULT_MAX_STACK;

    #[test]
    fn a_limit_over_its_ceiling_is_refused_naming_the_flag() {
        let mut c = Ceilings::default();
        assert!(c.check("w", &Limits::default(), STACK).is_ok());
        c.set("memory=32MiB").unwrap();
        c.set("timeout=5s").unwrap();
        c.set("descriptors=64").unwrap();
        assert_eq!(c.describe(), "memory 32 MiB, timeout 5s, descriptors 64");
        let within = Limits {
            memory: ByteSize(16 << 20),
            timeout: Duration::from_secs(2),
            descriptors: 64,
            ..Limits::default()
        };
        assert!(c.check("w", &within, STACK).is_ok());
        let greedy = Limits {
            memory: ByteSize(1 << 30),
            ..within
        };
        let refused = c.check("w", &greedy, STACK).unwrap_err().to_string();
        assert!(refused.contains("asks for memory 1 GiB"), "{refused}");
        assert!(refused.contains("at most 32 MiB"), "{refused}");
        assert!(refused.contains("--max memory=1GiB"), "{refused}");
        let patient = Limits {
            timeout: Duration::from_secs(3600),
            ..within
        };
        let refused = c.check("w", &patient, STACK).unwrap_err().to_string();
        assert!(refused.contains("asks for timeout 1h"), "{refused}");
        assert!(refused.contains("--max timeout=1h"), "{refused}");
        let hoarding = Limits {
            descriptors: 100_000,
            ..within
        };
        let refused = c.check("w", &hoarding, STACK).unwrap_err().to_string();
        assert!(refused.contains("descriptors 100000"), "{refused}");
        c.set("max-stack=1MiB").unwrap();
        let refused = c
            .check("w", &within, ByteSize(8 << 20))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("[engine] max-stack"), "{refused}");
        assert!(refused.contains("--max max-stack=8MiB"), "{refused}");
        c.set("component=1KiB").unwrap();
        assert!(c.component_over("w", "sha256:00", 1024).is_none());
        let refused = c
            .component_over("w", "sha256:00", 1025)
            .unwrap()
            .to_string();
        assert!(
            refused.contains("ceiling of 1 KiB for a component"),
            "{refused}"
        );
        assert!(refused.contains("--max component=SIZE"), "{refused}");
        assert!(c.context_over("w", "sha256:00", 32 << 20).is_none());
        let refused = c
            .context_over("w", "sha256:00", (32 << 20) + 1)
            .unwrap()
            .to_string();
        assert!(
            refused.contains("larger than this worker's memory ceiling of 32 MiB"),
            "{refused}"
        );
        c.set("memory=unlimited").unwrap();
        assert!(c.check("w", &greedy, STACK).is_ok());
        assert!(c.set("memry=1").unwrap_err().contains(KEYS));
        assert!(c.set("memory").is_err());
        assert!(c.set("timeout=10").is_err());
    }
}
