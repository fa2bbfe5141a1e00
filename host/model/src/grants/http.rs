//! `http`: hosts (optionally `host:port`) the plugin may send HTTP requests to.

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
    for h in &raw.http {
        if h.get_ref().contains("://") || h.get_ref().contains('/') || h.get_ref().is_empty() {
            c.problem(
                h.span(),
                format!("HTTP grant `{}` is not a host name", h.get_ref()),
                "write the host only, optionally with a port: `http = [\"api.example.com\", \"127.0.0.1:8080\"]`"
                    .into(),
            );
        }
    }
    grants.http = raw.http.iter().map(|h| h.get_ref().clone()).collect();
}

fn describe(grants: &Grants, out: &mut Vec<String>) {
    if !grants.http.is_empty() {
        out.push(format!("http {}", grants.http.join(", ")));
    }
}

fn lock_lines(grants: &Grants, _path: ShowPath<'_>, out: &mut Vec<String>) {
    out.extend(grants.http.iter().map(|h| format!("http {h}")));
}

fn table(grants: &Grants, out: &mut Map<String, Value>) {
    out.insert("http".into(), json!(grants.http));
}
