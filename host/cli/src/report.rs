//! `phasegate report`: one self-contained HTML file (no network, no CDN) that pictures a run
//! from its progress file — running, killed or finished.
//!
//! Every text that comes from a run (ids, messages, evidence, logs: a plugin's words) is
//! escaped; the data the page's script reads is embedded as JSON with `<` escaped, so nothing a
//! plugin returns can become markup or script in the report.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use phasegate_model::progress::{PhaseState, PhaseStatus, State, TaskState, TaskStatus};
use phasegate_model::text::serde_name;
use phasegate_runner::persist::ProgressStore;

use super::{Exit, bad_input, state_path};

/// Phases with more tasks than this are drawn as a density band instead of a row per task.
pub const ROWS_MAX: usize = 400;
/// Time bins of a density band.
const BINS: usize = 200;
/// Failures listed per phase; the rest are counted (`status --failed` lists them all).
const FAILURES_MAX: usize = 200;
/// Tasks whose logs are included per phase.
const LOGS_MAX: usize = 200;
/// Characters of a message or evidence shown before it is cut.
const TEXT_MAX: usize = 4000;

/// Write an HTML report of a run.
///
/// One self-contained file: a timeline of every task per phase (a density band for phases of
/// thousands), each gate's verdict with its reason and evidence, the failures with their kind
/// and message, logs (collapsed), and the run's totals. Works on a running or killed run's
/// progress file.
#[derive(Args)]
pub struct ReportArgs {
    /// Progress file [default: .phasegate/state.toml].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Where to write the report [default: report.html beside the progress file].
    #[arg(long, short)]
    output: Option<PathBuf>,
}

impl ReportArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let path = state_path(self.state);
        super::require_progress(&path)?;
        let store = ProgressStore::open(&path).map_err(|e| bad_input(format!("{e:#}")))?;
        let output = self
            .output
            .unwrap_or_else(|| path.with_file_name("report.html"));
        phasegate_runner::persist::write_atomically(&output, html(&store.state).as_bytes())
            .map_err(|e| bad_input(format!("cannot write {}: {e:#}", output.display())))?;
        println!("wrote {}", output.display());
        Ok(Exit::Success)
    }
}

/// The report of a run as one HTML document.
pub fn html(s: &State) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let totals = Totals::of(s);
    let _ = write!(
        out,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style></head>
<body data-rendered="no">
<header><h1>{name}</h1>
<p class="meta">run <code>{run}</code> · <span class="badge {status}">{status}</span> · started {started} · updated {updated}</p>
{reason}
<p id="live" class="meta"></p></header>
<section class="totals"><h2>Totals</h2><table>
<tr><th>phases</th><td>{complete} complete, {pfailed} failed, {ppending} not finished, of {phases}</td></tr>
<tr><th>tasks</th><td>{ok} succeeded, {failed} failed, {pending} not run, of {tasks}</td></tr>
<tr><th>attempts</th><td>{attempts} ({retries} retries)</td></tr>
<tr><th>task time</th><td>{busy} summed over tasks; {span} from the first task's start to the last one's end</td></tr>
</table></section>
"#,
        title = esc(&format!("phasegate report: {}", pipeline_name(s))),
        name = esc(&pipeline_name(s)),
        run = esc(&s.run_id),
        status = esc(&serde_name(&s.status)),
        started = esc(&s.started_at),
        updated = esc(&s.updated_at),
        reason = s
            .reason
            .as_deref()
            .map(|r| format!("<p class=\"reason\">{}</p>", esc(&cut(r, TEXT_MAX))))
            .unwrap_or_default(),
        complete = totals.phases_complete,
        pfailed = totals.phases_failed,
        ppending = s.phases.len() - totals.phases_complete - totals.phases_failed,
        phases = s.phases.len(),
        ok = totals.ok,
        failed = totals.failed,
        pending = totals.pending,
        tasks = totals.ok + totals.failed + totals.pending,
        attempts = totals.attempts,
        retries = totals.retries,
        busy = human(totals.busy_us),
        span = totals.span_us.map_or("—".into(), human),
    );
    for phase in &s.phases {
        write_phase(&mut out, phase);
    }
    let data = serde_json::json!({
        "phases": s.phases.iter().map(|p| serde_json::json!({
            "id": p.id.as_str(),
            "status": serde_name(&p.status),
            "tasks": p.tasks.len(),
            "failed": p.tasks.iter().filter(|t| t.status == TaskStatus::Failed).count(),
        })).collect::<Vec<_>>(),
    });
    // `<` escaped: the JSON cannot close the script element, whatever an id holds.
    let data = data.to_string().replace('<', "\\u003c");
    let _ = write!(
        out,
        r#"<footer>Written by <code>phasegate report</code> from the progress file; <code>phasegate status --failed</code> lists every failure.</footer>
<script id="data" type="application/json">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"#
    );
    out
}

fn write_phase(out: &mut String, p: &PhaseState) {
    let failed: Vec<&TaskState> = p
        .tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Failed)
        .collect();
    let _ = write!(
        out,
        r#"<section class="phase" id="phase-{id}"><h2>Phase <code>{id}</code> <span class="badge {status}">{status}</span></h2>
<p class="meta">{n} task(s), {f} failed</p>
"#,
        id = esc(&p.id),
        status = esc(&serde_name(&p.status)),
        n = p.tasks.len(),
        f = failed.len(),
    );
    if let Some(v) = &p.verdict {
        verdict(out, v, "gate");
        for g in &p.gates {
            verdict(out, &g.verdict, &format!("{} gate", g.policy.name()));
        }
    } else if p.status != PhaseStatus::Pending {
        out.push_str("<div class=\"verdict none\">no verdict yet</div>\n");
    }
    timeline(out, p);
    if !failed.is_empty() {
        out.push_str("<details open><summary>failures</summary><table class=\"failures\"><tr><th>task</th><th>kind</th><th>attempts</th><th>message</th></tr>\n");
        for t in failed.iter().take(FAILURES_MAX) {
            let (kind, message) = t
                .error
                .as_ref()
                .map(|e| (serde_name(&e.kind), e.message.as_str()))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr class=\"failure\"><td><code>{}</code></td><td>{}</td><td>{}</td><td class=\"message\">{}</td></tr>",
                esc(&t.id),
                esc(&kind),
                t.attempts,
                esc(&cut(message, TEXT_MAX))
            );
        }
        out.push_str("</table>");
        if failed.len() > FAILURES_MAX {
            let _ = write!(
                out,
                "<p class=\"meta\">… and {} more: <code>phasegate status --failed --phase {}</code></p>",
                failed.len() - FAILURES_MAX,
                esc(&p.id)
            );
        }
        out.push_str("</details>\n");
    }
    let logged: Vec<&TaskState> = p.tasks.iter().filter(|t| !t.log.is_empty()).collect();
    if !logged.is_empty() {
        let _ = writeln!(
            out,
            "<details class=\"logs\"><summary>logs of {} task(s)</summary>",
            logged.len()
        );
        for t in logged.iter().take(LOGS_MAX) {
            let _ = writeln!(
                out,
                "<details><summary><code>{}</code></summary><pre>{}</pre></details>",
                esc(&t.id),
                esc(&cut(&t.log.join("\n"), TEXT_MAX))
            );
        }
        if logged.len() > LOGS_MAX {
            let _ = write!(
                out,
                "<p class=\"meta\">… and {} more in the progress file</p>",
                logged.len() - LOGS_MAX
            );
        }
        out.push_str("</details>\n");
    }
    out.push_str("</section>\n");
}

/// The phase's tasks over time: a row per task, or a density band for thousands.
/// One verdict: the phase's, or (`what` naming its policy) one of its gates'.
fn verdict(out: &mut String, v: &phasegate_model::progress::VerdictRecord, what: &str) {
    let kind = serde_name(&v.kind);
    let label = match v.crashed {
        Some(how) => format!("crashed ({})", serde_name(&how)),
        None => kind.to_uppercase(),
    };
    let _ = writeln!(
        out,
        r#"<div class="verdict {kind}"><span class="badge {kind}">{upper}</span> {what} <code>{gate}</code>: <span class="verdict-reason">{reason}</span>{evidence}</div>"#,
        kind = esc(&kind),
        upper = esc(&label),
        what = esc(what),
        gate = esc(super::render::short_name(&v.gate)),
        reason = esc(&cut(&v.reason, TEXT_MAX)),
        evidence = v
            .evidence
            .as_deref()
            .map(|e| format!(
                "<details><summary>evidence</summary><pre>{}</pre></details>",
                esc(&cut(e, TEXT_MAX))
            ))
            .unwrap_or_default(),
    );
}

fn timeline(out: &mut String, p: &PhaseState) {
    let timed: Vec<(&TaskState, u64, u64)> = p
        .tasks
        .iter()
        .filter_map(|t| Some((t, t.started_us?, t.ended_us?.max(t.started_us?))))
        .collect();
    let (Some(start), Some(end)) = (
        timed.iter().map(|(_, s, _)| *s).min(),
        timed.iter().map(|(_, _, e)| *e).max(),
    ) else {
        out.push_str("<p class=\"meta\">no task has run yet</p>\n");
        return;
    };
    let span = (end - start).max(1) as f64;
    const WIDTH: f64 = 1000.0;
    let x = |t: u64| (t - start) as f64 / span * WIDTH;
    let _ = writeln!(
        out,
        "<p class=\"meta\">{} over {}</p>",
        if timed.len() > ROWS_MAX {
            format!("{} tasks, drawn as their density", timed.len())
        } else {
            format!("{} task(s), a row each", timed.len())
        },
        human(end - start)
    );
    if timed.len() <= ROWS_MAX {
        const ROW: f64 = 8.0;
        let height = timed.len() as f64 * ROW;
        let _ = write!(
            out,
            "<svg class=\"timeline rows\" viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" preserveAspectRatio=\"none\" role=\"img\">"
        );
        for (i, (t, s, e)) in timed.iter().enumerate() {
            let class = match (t.status, t.attempts > 1) {
                (TaskStatus::Failed, _) => "failed",
                (_, true) => "retried",
                (TaskStatus::Succeeded, false) => "ok",
                _ => "pending",
            };
            let _ = write!(
                out,
                "<rect class=\"{class}\" x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{:.1}\"><title>{}: {}, {} attempt(s), {}</title></rect>",
                x(*s),
                i as f64 * ROW + 1.0,
                (x(*e) - x(*s)).max(1.5),
                ROW - 2.0,
                esc(&t.id),
                t.status.name(),
                t.attempts,
                human(e - s)
            );
        }
        out.push_str("</svg>\n");
    } else {
        // How many tasks were running in each bin, and how many of those failed.
        let mut running = vec![0u32; BINS];
        let mut failing = vec![0u32; BINS];
        let bin = |t: u64| (((t - start) as f64 / span) * (BINS - 1) as f64) as usize;
        for (t, s, e) in &timed {
            for b in bin(*s)..=bin(*e) {
                running[b] += 1;
                if t.status == TaskStatus::Failed {
                    failing[b] += 1;
                }
            }
        }
        let peak = running.iter().copied().max().unwrap_or(1).max(1) as f64;
        const HEIGHT: f64 = 80.0;
        let w = WIDTH / BINS as f64;
        let _ = write!(
            out,
            "<svg class=\"timeline density\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" preserveAspectRatio=\"none\" role=\"img\">"
        );
        for b in 0..BINS {
            let h = running[b] as f64 / peak * HEIGHT;
            let f = failing[b] as f64 / peak * HEIGHT;
            let _ = write!(
                out,
                "<rect class=\"ok\" x=\"{:.2}\" y=\"{:.2}\" width=\"{w:.2}\" height=\"{h:.2}\"><title>{} running</title></rect>",
                b as f64 * w,
                HEIGHT - h,
                running[b]
            );
            if failing[b] > 0 {
                let _ = write!(
                    out,
                    "<rect class=\"failed\" x=\"{:.2}\" y=\"{:.2}\" width=\"{w:.2}\" height=\"{f:.2}\"><title>{} failing</title></rect>",
                    b as f64 * w,
                    HEIGHT - f,
                    failing[b]
                );
            }
        }
        let _ = write!(
            out,
            "</svg>\n<p class=\"meta\">peak {} running at once</p>\n",
            peak as u64
        );
    }
}

struct Totals {
    phases_complete: usize,
    phases_failed: usize,
    ok: usize,
    failed: usize,
    pending: usize,
    attempts: u64,
    retries: u64,
    busy_us: u64,
    span_us: Option<u64>,
}

impl Totals {
    fn of(s: &State) -> Totals {
        let tasks = || s.phases.iter().flat_map(|p| p.tasks.iter());
        let count = |status| tasks().filter(|t| t.status == status).count();
        let start = tasks().filter_map(|t| t.started_us).min();
        let end = tasks().filter_map(|t| t.ended_us).max();
        Totals {
            phases_complete: s
                .phases
                .iter()
                .filter(|p| p.status == PhaseStatus::Complete)
                .count(),
            phases_failed: s
                .phases
                .iter()
                .filter(|p| p.status == PhaseStatus::Failed)
                .count(),
            ok: count(TaskStatus::Succeeded),
            failed: count(TaskStatus::Failed),
            pending: count(TaskStatus::Pending),
            attempts: tasks().map(|t| u64::from(t.attempts)).sum(),
            retries: tasks()
                .map(|t| u64::from(t.attempts.saturating_sub(1)))
                .sum(),
            busy_us: tasks()
                .map(|t| match (t.started_us, t.ended_us) {
                    (Some(s), Some(e)) => e.saturating_sub(s),
                    _ => t.duration_ms.saturating_mul(1000),
                })
                .sum(),
            span_us: start.zip(end).map(|(s, e)| e.saturating_sub(s)),
        }
    }
}

fn pipeline_name(s: &State) -> String {
    s.pipeline
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| s.pipeline.display().to_string())
}

/// A duration given in microseconds, as a person reads it.
fn human(us: u64) -> String {
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        1_000_000..60_000_000 => format!("{:.1} s", us as f64 / 1e6),
        _ => format!("{}m {:02}s", us / 60_000_000, (us % 60_000_000) / 1_000_000),
    }
}

/// `text` cut to `max` characters, saying so where it was cut.
fn cut(text: &str, max: usize) -> String {
    match phasegate_model::text::cut(text, max) {
        Cow::Owned(cut) => format!("{cut} (cut at {max} characters)"),
        Cow::Borrowed(whole) => whole.to_owned(),
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;color:#1d232b;background:#fafbfc}
h1{margin:.2em 0}h2{font-size:1.15em;margin:1.2em 0 .3em}
code,pre{font:12.5px ui-monospace,monospace}pre{white-space:pre-wrap;background:#f0f2f5;padding:.6em;border-radius:4px;max-height:24em;overflow:auto}
.meta{color:#5a6572;margin:.2em 0}.reason{background:#fff3f3;border-left:4px solid #d33;padding:.4em .8em}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;font-size:.85em;font-weight:600;color:#fff;background:#8a96a3}
.badge.complete,.badge.completed,.badge.pass{background:#2e8b57}.badge.failed,.badge.fail{background:#d33}.badge.warn{background:#d98c00}.badge.running{background:#2f6fd0}
section.phase{background:#fff;border:1px solid #e3e7ec;border-radius:6px;padding:.2em 1em 1em;margin:1em 0}
.verdict{margin:.5em 0}.verdict.fail{color:#a11}
svg.timeline{display:block;background:#f4f6f8;border-radius:3px;margin:.4em 0}
svg.rows{height:auto;max-height:420px}svg.density{height:80px}
rect.ok{fill:#3c9d6b}rect.failed{fill:#d33}rect.retried{fill:#e0a020}rect.pending{fill:#b0b8c0}
table{border-collapse:collapse}td,th{text-align:left;padding:.15em .8em .15em 0;vertical-align:top}
table.failures td.message{max-width:640px;overflow-wrap:anywhere}
footer{color:#5a6572;margin-top:2em;font-size:.9em}
";

/// Reads the embedded data and writes a one-line summary: the report is static HTML, the
/// script only adds this line (and marks the page rendered, which the tests read back from a
/// real browser).
const SCRIPT: &str = "
(function(){
  var data = JSON.parse(document.getElementById('data').textContent);
  var tasks = 0, failed = 0;
  data.phases.forEach(function(p){ tasks += p.tasks; failed += p.failed; });
  document.getElementById('live').textContent =
    data.phases.length + ' phase(s), ' + tasks + ' task(s), ' + failed + ' failed';
  document.body.setAttribute('data-rendered', 'yes');
})();
";
