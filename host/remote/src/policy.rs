//! A worker's policy: what it lets the tasks it runs reach, and how much they may use
//! ([`ceilings`](crate::ceilings)). It is the trust boundary — a job asking for more is refused
//! before anything is instantiated. By default nothing is allowed.

use std::path::PathBuf;

use phasegate_model::error::Problem;
use phasegate_model::pipeline::{DirGrant, DirMode, Grants};

/// What a worker allows, set by its command-line flags.
#[derive(Clone, Debug, Default)]
pub struct WorkerPolicy {
    /// Guest paths the worker maps to its own directories, and how (`--allow-dir`).
    pub dirs: Vec<DirGrant>,
    /// Environment variable names passed through or set (`--allow-env`).
    pub env: Vec<String>,
    /// `host:port` pairs for sockets (`--allow-net`).
    pub net: Vec<String>,
    /// Hosts for HTTP (`--allow-http`).
    pub http: Vec<String>,
    /// The most a job's limits may ask for (`--max`).
    pub ceilings: crate::ceilings::Ceilings,
}

impl WorkerPolicy {
    /// Parses `--allow-dir GUEST=HOST[:ro|:rw]` (read-only by default).
    pub fn parse_dir(spec: &str) -> Result<DirGrant, String> {
        let (guest, rest) = spec.split_once('=').ok_or_else(|| {
            format!("`{spec}` is not GUEST=HOST[:ro|:rw], e.g. /data=/srv/data:ro")
        })?;
        let (host, mode) = match rest.rsplit_once(':') {
            Some((host, "ro")) => (host, DirMode::Ro),
            Some((host, "rw")) => (host, DirMode::Rw),
            _ => (rest, DirMode::Ro),
        };
        if !guest.starts_with('/') || host.is_empty() {
            return Err(format!(
                "`{spec}`: the guest path must be absolute and the host path not empty"
            ));
        }
        Ok(DirGrant {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            mode,
        })
    }

    /// The grants a job may run with here: the job's, with each granted directory mapped to
    /// the worker's own. A grant the worker does not allow is a problem naming it and the flag
    /// that would allow it.
    pub fn admit(&self, worker: &str, grants: &Grants) -> Result<Grants, Problem> {
        let refuse = |grant: String, flag: String| {
            Problem::new(format!(
                "worker `{worker}` does not allow the grant {grant}"
            ))
            .help(format!(
                "start the worker with `{flag}`, or run the task elsewhere"
            ))
        };
        let mut admitted = grants.clone();
        for d in &mut admitted.dirs {
            let allowed = self
                .dirs
                .iter()
                .find(|a| a.guest == d.guest && (a.mode == DirMode::Rw || d.mode == DirMode::Ro));
            match allowed {
                Some(a) => d.host = a.host.clone(),
                None => {
                    return Err(refuse(
                        format!("dir {} ({})", d.guest, d.mode.name()),
                        format!("--allow-dir {}=DIR:{}", d.guest, d.mode.name()),
                    ));
                }
            }
        }
        let mut env = grants.env.iter().chain(grants.env_set.keys());
        if let Some(name) = env.find(|n| !self.env.contains(n)) {
            return Err(refuse(format!("env {name}"), format!("--allow-env {name}")));
        }
        if let Some(n) = grants.net.iter().find(|n| !self.net.contains(n)) {
            return Err(refuse(format!("net {n}"), format!("--allow-net {n}")));
        }
        if let Some(h) = grants.http.iter().find(|h| !self.http.contains(h)) {
            return Err(refuse(format!("http {h}"), format!("--allow-http {h}")));
        }
        Ok(admitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_allowed_by_default_and_each_refusal_names_its_flag() {
        let none = WorkerPolicy::default();
        assert!(none.admit("w", &Grants::default()).is_ok());
        let env = Grants {
            env: vec!["LANG".into()],
            ..Grants::default()
        };
        let refused = none.admit("w", &env).unwrap_err().to_string();
        assert!(refused.contains("grant env LANG"), "{refused}");
        assert!(refused.contains("--allow-env LANG"), "{refused}");
        let allowing = WorkerPolicy {
            env: vec!["LANG".into()],
            ..WorkerPolicy::default()
        };
        assert!(allowing.admit("w", &env).is_ok());
    }

    #[test]
    fn directories_map_to_the_worker_and_never_widen() {
        let policy = WorkerPolicy {
            dirs: vec![WorkerPolicy::parse_dir("/data=/srv/data").unwrap()],
            ..WorkerPolicy::default()
        };
        let grant = |mode| Grants {
            dirs: vec![DirGrant {
                host: "/controller/data".into(),
                guest: "/data".into(),
                mode,
            }],
            ..Grants::default()
        };
        let admitted = policy.admit("w", &grant(DirMode::Ro)).unwrap();
        assert_eq!(admitted.dirs[0].host, PathBuf::from("/srv/data"));
        let rw = policy
            .admit("w", &grant(DirMode::Rw))
            .unwrap_err()
            .to_string();
        assert!(rw.contains("--allow-dir /data=DIR:rw"), "{rw}");
        assert!(WorkerPolicy::parse_dir("data=/x").is_err());
        assert_eq!(
            WorkerPolicy::parse_dir("/d=/x:rw").unwrap().mode,
            DirMode::Rw
        );
    }
}
