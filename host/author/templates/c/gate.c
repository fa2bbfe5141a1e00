/*
 * `{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed.
 *
 * Config: `max-failures` (default 0).
 */
#include "phasegate.h"

PG_PLUGIN("{{name}}", "0.1.0", "{{description}}");

pg_verdict_kind_t pg_check(const pg_report_t *report, pg_buf_t *reason, pg_buf_t *evidence) {
    size_t failed = 0;
    pg_buf_t names = {0}, list = {0};
    pg_buf_puts(&names, "");
    pg_buf_puts(&list, "[");
    for (size_t i = 0; i < report->count; i++) {
        if (report->outcomes[i].error_kind == NULL) continue;
        pg_buf_puts(&names, failed ? ", " : "");
        pg_buf_puts(&names, report->outcomes[i].task);
        pg_buf_puts(&list, failed ? ", " : "");
        pg_buf_json_string(&list, report->outcomes[i].task);
        failed++;
    }
    pg_buf_puts(&list, "]");
    size_t ok = report->count - failed;
    pg_buf_printf(evidence, "{\"succeeded\": %zu, \"failed\": %s}", ok, list.data);
    if ((long long)failed > pg_json_int(report->config, "max-failures", 0)) {
        pg_buf_printf(reason, "%zu of %zu task(s) succeeded; failed: %s", ok, report->count, names.data);
        return PG_FAIL;
    }
    pg_buf_printf(reason, "%zu of %zu task(s) succeeded", ok, report->count);
    return PG_PASS;
}
