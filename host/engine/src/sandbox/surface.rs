//! A component's capability surface: which grants its imports could use, compared with the
//! grants it has. Plain data, shared by `validate` (and later by the plugin store's review).

use phasegate_model::pipeline::Grants;

/// A capability a plugin can be granted, and the WASI interfaces that use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// `wasi:filesystem/*` — needs `grants.dirs`.
    Filesystem,
    /// `wasi:cli/environment` — needs `grants.env` / `grants.env-set`.
    Environment,
    /// `wasi:sockets/*` — needs `grants.net`.
    Sockets,
    /// `wasi:http/*` — needs `grants.http`.
    Http,
}

impl Capability {
    /// The pipeline key that grants it.
    pub fn grant_key(self) -> &'static str {
        match self {
            Capability::Filesystem => "grants.dirs",
            Capability::Environment => "grants.env",
            Capability::Sockets => "grants.net",
            Capability::Http => "grants.http",
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Filesystem => "filesystem",
            Capability::Environment => "environment",
            Capability::Sockets => "sockets",
            Capability::Http => "http",
        }
    }

    fn of_import(import: &str) -> Option<Capability> {
        let name = import.split('@').next().unwrap_or(import);
        if name.starts_with("wasi:filesystem/") {
            Some(Capability::Filesystem)
        } else if name == "wasi:cli/environment" {
            Some(Capability::Environment)
        } else if name.starts_with("wasi:sockets/") {
            Some(Capability::Sockets)
        } else if name.starts_with("wasi:http/") {
            Some(Capability::Http)
        } else {
            None
        }
    }

    fn granted(self, grants: &Grants) -> bool {
        match self {
            Capability::Filesystem => !grants.dirs.is_empty(),
            Capability::Environment => !grants.env.is_empty() || !grants.env_set.is_empty(),
            Capability::Sockets => !grants.net.is_empty(),
            Capability::Http => !grants.http.is_empty(),
        }
    }

    const ALL: [Capability; 4] = [
        Capability::Filesystem,
        Capability::Environment,
        Capability::Sockets,
        Capability::Http,
    ];
}

/// The capabilities a component's imports could use.
pub fn surface(imports: &[String]) -> Vec<(Capability, Vec<String>)> {
    let mut out: Vec<(Capability, Vec<String>)> = Vec::new();
    for import in imports {
        if let Some(cap) = Capability::of_import(import) {
            match out.iter_mut().find(|(c, _)| *c == cap) {
                Some((_, list)) => list.push(import.clone()),
                None => out.push((cap, vec![import.clone()])),
            }
        }
    }
    out.sort();
    out
}

/// The capability surface in one line: `filesystem, environment`, or `none`.
pub fn summary(imports: &[String]) -> String {
    let caps: Vec<&str> = surface(imports).iter().map(|(c, _)| c.name()).collect();
    if caps.is_empty() {
        "none".to_owned()
    } else {
        caps.join(", ")
    }
}

/// What a review of grants against imports finds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Review {
    /// Grants the component's imports show it cannot use.
    pub unused: Vec<Capability>,
    /// Capabilities the component imports but has no grant for (its calls will be refused).
    pub ungranted: Vec<(Capability, Vec<String>)>,
}

/// Compares a component's imports with its grants.
pub fn review(imports: &[String], grants: &Grants) -> Review {
    let surface = surface(imports);
    Review {
        unused: Capability::ALL
            .into_iter()
            .filter(|c| c.granted(grants) && !surface.iter().any(|(s, _)| s == c))
            .collect(),
        ungranted: surface
            .into_iter()
            .filter(|(c, _)| !c.granted(grants))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_finds_unused_and_ungranted() {
        let imports = vec![
            "wasi:filesystem/preopens@0.2.6".to_owned(),
            "wasi:sockets/tcp@0.2.6".to_owned(),
            "wasi:io/streams@0.2.6".to_owned(),
        ];
        let grants = Grants {
            net: vec!["127.0.0.1:1".into()],
            http: vec!["example.com".into()],
            ..Grants::default()
        };
        let r = review(&imports, &grants);
        assert_eq!(r.unused, vec![Capability::Http]);
        assert_eq!(
            r.ungranted,
            vec![(
                Capability::Filesystem,
                vec!["wasi:filesystem/preopens@0.2.6".to_owned()]
            )]
        );
    }
}
