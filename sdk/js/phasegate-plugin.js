// Write phasegate plugins in JavaScript (built into components with componentize-js).
//
// A task:
//
//   import { task, InvalidInput } from "./phasegate-plugin.js";
//
//   export const { metadata, run } = task({
//     name: "shout",
//     version: "0.1.0",
//     description: "Upper-cases its input",
//     run(req) {
//       if (typeof req.input !== "string") throw new InvalidInput("expected a string");
//       return { text: req.input.toUpperCase() };
//     },
//   });
//
// A gate:
//
//   export const { metadata, check } = gate({
//     name: "no-failures",
//     version: "0.1.0",
//     check(report) {
//       const failed = report.failed();
//       return failed.length ? Verdict.fail(`${failed.length} failed`) : Verdict.pass("ok");
//     },
//   });
//
// The host sends JSON text; this module parses it the way the Rust SDK does: the rendered input
// is parsed as JSON when it is JSON and offered as the raw string otherwise; the config is a JSON
// object ({} when the pipeline gives none); what a task returns is serialised to JSON.

import { log as hostLog, progress as hostProgress } from "phasegate:plugin/host@0.1.0";

/** The work failed; the host retries it (up to the task's `retries`). */
export class Failed extends Error {}
/** The input is not acceptable; retrying cannot help. */
export class InvalidInput extends Error {}
/** The config is not acceptable; retrying cannot help. */
export class InvalidConfig extends Error {}

/** Structured log lines, kept with the task's result in the progress file. */
export const log = {
  trace: (message) => hostLog("trace", String(message)),
  debug: (message) => hostLog("debug", String(message)),
  info: (message) => hostLog("info", String(message)),
  warn: (message) => hostLog("warn", String(message)),
  error: (message) => hostLog("error", String(message)),
};

/** Reports progress of long work: `done` of `total` units. */
export function progress(done, total, message = "") {
  hostProgress(done, total, String(message));
}

/** A gate's decision: `Verdict.pass(reason)`, `Verdict.warn(...)` or `Verdict.fail(...)`. */
export const Verdict = {
  pass: (reason, evidence) => ({ kind: "pass", reason, evidence }),
  warn: (reason, evidence) => ({ kind: "warn", reason, evidence }),
  fail: (reason, evidence) => ({ kind: "fail", reason, evidence }),
};

function parseInput(raw) {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function parseObject(raw) {
  return raw.trim() === "" ? {} : JSON.parse(raw);
}

function metadataOf(kind, spec) {
  for (const key of ["name", "version"]) {
    if (typeof spec[key] !== "string" || spec[key] === "") {
      throw new Error(`phasegate-plugin: ${kind}({...}) needs a \`${key}\` string`);
    }
  }
  const schema = spec.configSchema;
  return () => ({
    name: spec.name,
    version: spec.version,
    description: spec.description ?? "",
    kind,
    configSchema: schema === undefined ? undefined : typeof schema === "string" ? schema : JSON.stringify(schema),
  });
}

// componentize-js turns an exception with a `payload` into the `err` case of a result.
function taskError(tag, message) {
  const error = new Error(message);
  error.payload = { tag, val: message };
  return error;
}

/**
 * Defines the component's task. `spec.run(request)` gets `{runId, phase, task, attempt, input,
 * rawInput, context, config}` and returns anything JSON can hold (or throws).
 */
export function task(spec) {
  if (typeof spec.run !== "function") throw new Error("phasegate-plugin: task({...}) needs a `run(request)` function");
  return {
    metadata: metadataOf("task", spec),
    run(request) {
      let config;
      try {
        config = parseObject(request.config);
      } catch (e) {
        throw taskError("invalid-config", `cannot read config: ${e.message}`);
      }
      const req = {
        runId: request.runId,
        phase: request.phase,
        task: request.task,
        attempt: request.attempt,
        input: parseInput(request.input),
        rawInput: request.input,
        context: request.context.trim() === "" ? null : JSON.parse(request.context),
        config,
      };
      let output;
      try {
        output = spec.run(req);
      } catch (e) {
        if (e instanceof InvalidInput) throw taskError("invalid-input", e.message);
        if (e instanceof InvalidConfig) throw taskError("invalid-config", e.message);
        if (e instanceof Failed) throw taskError("failed", e.message);
        throw taskError("failed", e instanceof Error ? `${e.name}: ${e.message}` : String(e));
      }
      let text;
      try {
        text = JSON.stringify(output);
      } catch (e) {
        throw taskError("failed", `cannot serialise output: ${e instanceof Error ? e.message : String(e)}`);
      }
      if (text === undefined) throw taskError("failed", "cannot serialise output: the task returned a value JSON cannot hold (undefined or a function)");
      return text;
    },
  };
}

/**
 * Defines the component's gate. `spec.check(report)` gets `{runId, phase, outcomes, context,
 * config, failed()}` (each outcome: `{task, output, error: {kind, message} | null, attempts,
 * durationMs, succeeded}`) and returns a `Verdict`.
 */
export function gate(spec) {
  if (typeof spec.check !== "function") throw new Error("phasegate-plugin: gate({...}) needs a `check(report)` function");
  const fail = (reason) => ({ kind: "fail", reason, evidence: undefined });
  return {
    metadata: metadataOf("gate", spec),
    check(report) {
      let config;
      try {
        config = parseObject(report.config);
      } catch (e) {
        return fail(`gate config is invalid: ${e.message}`);
      }
      const outcomes = report.outcomes.map((o) => ({
        task: o.task,
        output: o.output === undefined || o.output === null ? null : parseInput(o.output),
        error: o.error ? { kind: o.error.kind, message: o.error.message } : null,
        attempts: o.attempts,
        durationMs: Number(o.durationMs),
        succeeded: !o.error,
      }));
      let verdict;
      try {
        verdict = spec.check({
          runId: report.runId,
          phase: report.phase,
          outcomes,
          context: report.context.trim() === "" ? null : JSON.parse(report.context),
          config,
          failed: () => outcomes.filter((o) => !o.succeeded),
        });
      } catch (e) {
        return fail(`gate threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
      }
      if (!verdict || !["pass", "warn", "fail"].includes(verdict.kind)) {
        return fail("gate returned something that is not a Verdict (use Verdict.pass/warn/fail)");
      }
      const reason = String(verdict.reason ?? "");
      let evidence;
      try {
        evidence = verdict.evidence === undefined || verdict.evidence === null ? undefined : JSON.stringify(verdict.evidence);
      } catch (e) {
        return fail(`cannot serialise evidence: ${e instanceof Error ? e.message : String(e)} (the verdict was ${verdict.kind}: ${reason})`);
      }
      return { kind: verdict.kind, reason, evidence };
    },
  };
}
