"""`{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed.

Config: `max-failures` (default 0).
"""

import phasegate_plugin as pg
from phasegate_plugin import WitWorld  # noqa: F401  (componentize-py binds this class)


@pg.gate(name="{{name}}", version="0.1.0", description="{{description}}")
def check(report: pg.Report):
    total = len(report.outcomes)
    failed = [o.task for o in report.failed()]
    ok = total - len(failed)
    evidence = {"succeeded": ok, "failed": failed}
    if len(failed) > report.config.get("max-failures", 0):
        return pg.Verdict.fail(f"{ok} of {total} task(s) succeeded; failed: {', '.join(failed)}", evidence)
    return pg.Verdict.pass_(f"{ok} of {total} task(s) succeeded", evidence)
