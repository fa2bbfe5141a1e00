//! `context`: requests (a gate's reports) carry the whole context, not only the run's names.

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
    grants.context = raw.context;
}

fn describe(grants: &Grants, out: &mut Vec<String>) {
    if grants.context {
        out.push("the whole context".into());
    }
}

fn lock_lines(grants: &Grants, _path: ShowPath<'_>, out: &mut Vec<String>) {
    if grants.context {
        out.push("context".into());
    }
}

fn table(grants: &Grants, out: &mut Map<String, Value>) {
    out.insert("context".into(), json!(grants.context));
}
