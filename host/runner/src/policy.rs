//! Gate policies: a phase's verdict from its gates' verdicts. A `required` gate's fail fails the
//! phase; an `advisory` gate's fail is a warning; the `quorum` gates fail the phase when fewer
//! than `quorum` of them pass (a warn counts as passing). Otherwise the phase warns when a gate
//! warned or an advisory gate failed, and passes.

use phasegate_model::pipeline::{GatePolicy, Phase};
use phasegate_model::progress::{GateVerdict, VerdictKind, VerdictRecord};

/// What the `gate` of a verdict combined by policies names: the policy that decided.
pub fn decided_by(policy: &str) -> String {
    format!("policy:{policy}")
}

/// The phase's verdict from its gates' (`verdicts`, in the order of `phase.gates`).
pub fn combine(phase: &Phase, verdicts: &[GateVerdict]) -> VerdictRecord {
    let named = |g: &GateVerdict| {
        format!(
            "`{}` {} ({})",
            short(&g.verdict.gate),
            kind_word(g.verdict.kind),
            g.verdict.reason
        )
    };
    let of = |policy: GatePolicy| verdicts.iter().filter(move |g| g.policy == policy);
    let failed_required: Vec<String> = of(GatePolicy::Required)
        .filter(|g| g.verdict.kind == VerdictKind::Fail)
        .map(named)
        .collect();
    if !failed_required.is_empty() {
        return record(
            VerdictKind::Fail,
            "required",
            format!("required gate failed: {}", failed_required.join("; ")),
        );
    }
    let voters: Vec<&GateVerdict> = of(GatePolicy::Quorum).collect();
    let passed = voters
        .iter()
        .filter(|g| g.verdict.kind != VerdictKind::Fail)
        .count();
    if !voters.is_empty() && passed < phase.quorum {
        let failed: Vec<String> = voters
            .iter()
            .filter(|g| g.verdict.kind == VerdictKind::Fail)
            .map(|g| named(g))
            .collect();
        return record(
            VerdictKind::Fail,
            "quorum",
            format!(
                "quorum not reached: {passed} of {} quorum gate(s) passed, {} needed; {}",
                voters.len(),
                phase.quorum,
                failed.join("; ")
            ),
        );
    }
    let warnings: Vec<String> = verdicts
        .iter()
        .filter(|g| {
            g.verdict.kind == VerdictKind::Warn
                || (g.policy == GatePolicy::Advisory && g.verdict.kind == VerdictKind::Fail)
        })
        .map(|g| format!("{} gate {}", g.policy.name(), named(g)))
        .collect();
    let quorum = if voters.is_empty() {
        String::new()
    } else {
        format!(
            "; quorum reached: {passed} of {} passed, {} needed",
            voters.len(),
            phase.quorum
        )
    };
    if warnings.is_empty() {
        let ok = verdicts
            .iter()
            .filter(|g| g.verdict.kind != VerdictKind::Fail)
            .count();
        let passed = if ok == verdicts.len() {
            format!("all {ok} gate(s) passed")
        } else {
            format!("{ok} of {} gate(s) passed", verdicts.len())
        };
        record(VerdictKind::Pass, "all", format!("{passed}{quorum}"))
    } else {
        let advisory = verdicts
            .iter()
            .any(|g| g.policy == GatePolicy::Advisory && g.verdict.kind == VerdictKind::Fail);
        record(
            VerdictKind::Warn,
            if advisory { "advisory" } else { "all" },
            format!("{}{quorum}", warnings.join("; ")),
        )
    }
}

fn record(kind: VerdictKind, policy: &str, reason: String) -> VerdictRecord {
    VerdictRecord {
        kind,
        gate: decided_by(policy),
        reason: phasegate_model::outcome::bounded(reason),
        evidence: None,
        crashed: None,
    }
}

fn kind_word(kind: VerdictKind) -> &'static str {
    match kind {
        VerdictKind::Pass => "passed",
        VerdictKind::Warn => "warned",
        VerdictKind::Fail => "failed",
    }
}

/// A gate's file name without its folder (`…/threshold.wasm` → `threshold.wasm`).
fn short(spec: &str) -> &str {
    spec.rsplit('/').next().unwrap_or(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(quorum: usize) -> Phase {
        Phase {
            id: "p".into(),
            description: None,
            parallel: true,
            concurrency: 1,
            gates: Vec::new(),
            quorum,
            tasks: Vec::new(),
        }
    }

    fn gate(policy: GatePolicy, name: &str, kind: VerdictKind) -> GateVerdict {
        GateVerdict {
            policy,
            key: None,
            verdict: VerdictRecord {
                kind,
                gate: format!("gates/{name}.wasm"),
                reason: format!("{name} says so"),
                evidence: None,
                crashed: None,
            },
        }
    }

    use GatePolicy::{Advisory, Quorum, Required};
    use VerdictKind::{Fail, Pass, Warn};

    #[test]
    fn each_policy_decides_as_documented() {
        let v = combine(
            &phase(0),
            &[gate(Required, "a", Pass), gate(Advisory, "b", Fail)],
        );
        assert_eq!((v.kind, v.gate.as_str()), (Warn, "policy:advisory"));
        assert!(
            v.reason
                .contains("advisory gate `b.wasm` failed (b says so)"),
            "{}",
            v.reason
        );
        let v = combine(
            &phase(0),
            &[gate(Required, "a", Fail), gate(Advisory, "b", Pass)],
        );
        assert_eq!((v.kind, v.gate.as_str()), (Fail, "policy:required"));
        let votes = [
            gate(Quorum, "x", Pass),
            gate(Quorum, "y", Fail),
            gate(Quorum, "z", Warn),
        ];
        let v = combine(&phase(2), &votes);
        assert_eq!(v.kind, Warn, "{}", v.reason);
        assert!(v.reason.contains("quorum reached: 2 of 3 passed, 2 needed"));
        let v = combine(&phase(3), &votes);
        assert_eq!((v.kind, v.gate.as_str()), (Fail, "policy:quorum"));
        assert!(
            v.reason.starts_with(
                "quorum not reached: 2 of 3 quorum gate(s) passed, 3 needed; `y.wasm` failed"
            ),
            "{}",
            v.reason
        );
        let v = combine(&phase(0), &[gate(Required, "a", Pass)]);
        assert_eq!((v.kind, v.reason.as_str()), (Pass, "all 1 gate(s) passed"));
    }
}
