//! `env` and `env-set`: environment variables passed through by name, or set to fixed values.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::{Capability, Check, Grants, RawGrants, ShowPath};

pub(super) const CAPABILITY: Capability = Capability {
    check,
    describe,
    lock_lines,
    table,
};

fn check(raw: &RawGrants, _dir: &Path, c: &mut dyn Check, grants: &mut Grants) {
    for e in &raw.env {
        if e.get_ref().is_empty() || e.get_ref().contains('=') {
            c.problem(
                e.span(),
                format!("`{}` is not an environment variable name", e.get_ref()),
                "list names to pass through in `env`; set values with `env-set = { NAME = \"value\" }`"
                    .into(),
            );
        }
    }
    grants.env = raw.env.iter().map(|e| e.get_ref().clone()).collect();
    grants.env_set = raw.env_set.clone();
}

fn describe(grants: &Grants, out: &mut Vec<String>) {
    if !grants.env.is_empty() {
        out.push(format!("env {}", grants.env.join(", ")));
    }
    if !grants.env_set.is_empty() {
        out.push(format!(
            "env-set {}",
            grants
                .env_set
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

fn lock_lines(grants: &Grants, _path: ShowPath<'_>, out: &mut Vec<String>) {
    out.extend(grants.env.iter().map(|e| format!("env {e}")));
    out.extend(grants.env_set.keys().map(|e| format!("env-set {e}")));
}

fn table(grants: &Grants, out: &mut Map<String, Value>) {
    out.insert("env".into(), json!(grants.env));
    out.insert("env-set".into(), json!(grants.env_set));
}
