// `{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed and
// none wrote more than `max-written` bytes into its read-write grants.
//
// Config: `max-failures` (default 0), `max-written` (bytes; default: no bound).

import { gate, Verdict } from "./phasegate-plugin.js";
// What each task used, as the host measured it: an object or undefined; its numbers are
// BigInts (u64 in the contract).
import { ofTask } from "phasegate:plugin/usage@0.1.0";

export const { metadata, check } = gate({
  name: "{{name}}",
  version: "0.1.0",
  description: "{{description}}",
  // What `phasegate validate` checks the pipeline's `config` against.
  configSchema: {"type": "object", "properties": {"max-failures": {"type": "integer", "minimum": 0}, "max-written": {"type": "integer", "minimum": 0}}, "additionalProperties": false},
  check(report) {
    const total = report.outcomes.length;
    const failed = report.failed().map((o) => o.task);
    const ok = total - failed.length;
    const evidence = { succeeded: ok, failed };
    const maxWritten = report.config["max-written"];
    if (maxWritten !== undefined) {
      const heavy = report.outcomes
        .filter((o) => (ofTask(o.task)?.written ?? 0n) > BigInt(maxWritten))
        .map((o) => o.task);
      if (heavy.length > 0) {
        return Verdict.fail(
          `${heavy.length} task(s) wrote more than max-written (${maxWritten} bytes) into read-write grants: ${heavy.join(", ")}`,
          evidence,
        );
      }
    }
    if (failed.length > (report.config["max-failures"] ?? 0)) {
      return Verdict.fail(`${ok} of ${total} task(s) succeeded; failed: ${failed.join(", ")}`, evidence);
    }
    return Verdict.pass(`${ok} of ${total} task(s) succeeded`, evidence);
  },
});
