//! `net`: `host:port` pairs the plugin may open TCP/UDP connections to.

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
    for n in &raw.net {
        let ok = n
            .get_ref()
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            c.problem(
                n.span(),
                format!("network grant `{}` is not `host:port`", n.get_ref()),
                "write e.g. `net = [\"127.0.0.1:5432\", \"db.internal:5432\"]`".into(),
            );
        }
    }
    grants.net = raw.net.iter().map(|n| n.get_ref().clone()).collect();
}

fn describe(grants: &Grants, out: &mut Vec<String>) {
    if !grants.net.is_empty() {
        out.push(format!("net {}", grants.net.join(", ")));
    }
}

fn lock_lines(grants: &Grants, _path: ShowPath<'_>, out: &mut Vec<String>) {
    out.extend(grants.net.iter().map(|n| format!("net {n}")));
}

fn table(grants: &Grants, out: &mut Map<String, Value>) {
    out.insert("net".into(), json!(grants.net));
}
