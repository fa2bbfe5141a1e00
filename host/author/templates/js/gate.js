// `{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed.
//
// Config: `max-failures` (default 0).

import { gate, Verdict } from "./phasegate-plugin.js";

export const { metadata, check } = gate({
  name: "{{name}}",
  version: "0.1.0",
  description: "{{description}}",
  check(report) {
    const total = report.outcomes.length;
    const failed = report.failed().map((o) => o.task);
    const ok = total - failed.length;
    const evidence = { succeeded: ok, failed };
    if (failed.length > (report.config["max-failures"] ?? 0)) {
      return Verdict.fail(`${ok} of ${total} task(s) succeeded; failed: ${failed.join(", ")}`, evidence);
    }
    return Verdict.pass(`${ok} of ${total} task(s) succeeded`, evidence);
  },
});
