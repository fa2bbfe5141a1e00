//! `deterministic` and `seed`: a fixed wall clock, a counting monotonic clock and seeded random,
//! for reproducible runs (without it, the host's clocks and random).

use std::path::Path;

use serde_json::{Map, Value, json};

use super::{Capability, Check, Grants, RawGrants, ShowPath};

pub(super) const CAPABILITY: Capability = Capability {
    check,
    describe,
    lock_lines,
    table,
};

fn check(raw: &RawGrants, _dir: &Path, _c: &mut dyn Check, grants: &mut Grants) {
    grants.deterministic = raw.deterministic;
    grants.seed = raw.seed.unwrap_or(0);
}

fn describe(grants: &Grants, out: &mut Vec<String>) {
    if grants.deterministic {
        out.push(format!(
            "deterministic clocks and random (seed {})",
            grants.seed
        ));
    }
}

fn lock_lines(grants: &Grants, _path: ShowPath<'_>, out: &mut Vec<String>) {
    if grants.deterministic {
        out.push("deterministic".into());
    }
}

fn table(grants: &Grants, out: &mut Map<String, Value>) {
    out.insert("deterministic".into(), json!(grants.deterministic));
    out.insert(
        "seed".into(),
        if grants.deterministic {
            json!(grants.seed)
        } else {
            Value::Null
        },
    );
}
