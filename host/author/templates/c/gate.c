/*
 * `{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed and
 * none wrote more than `max-written` bytes into its read-write grants.
 *
 * Config: `max-failures` (default 0), `max-written` (bytes; default: no bound).
 */
#include "phasegate.h"

/* The last argument: what `phasegate validate` checks the pipeline's `config` against. */
PG_PLUGIN_WITH_SCHEMA("{{name}}", "0.1.0", "{{description}}",
                      "{\"type\": \"object\", \"properties\": {\"max-failures\": {\"type\": \"integer\", \"minimum\": 0}, \"max-written\": {\"type\": \"integer\", \"minimum\": 0}}, \"additionalProperties\": false}");

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
    long long max_written = pg_json_int(report->config, "max-written", -1);
    if (max_written >= 0) {
        /* What each task used, as the host measured it (false: no figures for the task). */
        pg_buf_t heavy = {0};
        size_t over = 0;
        pg_usage_t used;
        pg_buf_puts(&heavy, "");
        for (size_t i = 0; i < report->count; i++) {
            if (!pg_usage(report->outcomes[i].task, &used) || used.written <= (uint64_t)max_written) continue;
            pg_buf_puts(&heavy, over ? ", " : "");
            pg_buf_puts(&heavy, report->outcomes[i].task);
            over++;
        }
        if (over) {
            pg_buf_printf(reason, "%zu task(s) wrote more than max-written (%lld bytes) into read-write grants: %s",
                          over, max_written, heavy.data);
            return PG_FAIL;
        }
    }
    if ((long long)failed > pg_json_int(report->config, "max-failures", 0)) {
        pg_buf_printf(reason, "%zu of %zu task(s) succeeded; failed: %s", ok, report->count, names.data);
        return PG_FAIL;
    }
    pg_buf_printf(reason, "%zu of %zu task(s) succeeded", ok, report->count);
    return PG_PASS;
}
