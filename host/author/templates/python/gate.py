"""`{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed and
none wrote more than `max-written` bytes into its read-write grants.

Config: `max-failures` (default 0), `max-written` (bytes; default: no bound).
"""

import phasegate_plugin as pg
from phasegate_plugin import WitWorld  # noqa: F401  (componentize-py binds this class)


# config_schema: what `phasegate validate` checks the pipeline's `config` against.
@pg.gate(name="{{name}}", version="0.1.0", description="{{description}}",
         config_schema={"type": "object", "properties": {"max-failures": {"type": "integer", "minimum": 0}, "max-written": {"type": "integer", "minimum": 0}}, "additionalProperties": False})
def check(report: pg.Report):
    total = len(report.outcomes)
    failed = [o.task for o in report.failed()]
    ok = total - len(failed)
    evidence = {"succeeded": ok, "failed": failed}
    max_written = report.config.get("max-written")
    if max_written is not None:
        # What each task used, as the host measured it (None for a task that never ran).
        heavy = [o.task for o in report.outcomes if (u := o.usage()) is not None and u.written > max_written]
        if heavy:
            return pg.Verdict.fail(f"{len(heavy)} task(s) wrote more than max-written ({max_written} bytes) "
                                   f"into read-write grants: {', '.join(heavy)}", evidence)
    if len(failed) > report.config.get("max-failures", 0):
        return pg.Verdict.fail(f"{ok} of {total} task(s) succeeded; failed: {', '.join(failed)}", evidence)
    return pg.Verdict.pass_(f"{ok} of {total} task(s) succeeded", evidence)
