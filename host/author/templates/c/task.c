/*
 * `{{name}}`: a phasegate task. Counts the words of its input text.
 *
 * Config: `min-words` (default 1) — fewer words than that is an invalid input.
 */
#include <ctype.h>

#include "phasegate.h"

/* The last argument: what `phasegate validate` checks the pipeline's `config` against. */
PG_PLUGIN_WITH_SCHEMA("{{name}}", "0.1.0", "{{description}}",
                      "{\"type\": \"object\", \"properties\": {\"min-words\": {\"type\": \"integer\", \"minimum\": 0}}, \"additionalProperties\": false}");

pg_status_t pg_run(const pg_request_t *req, pg_buf_t *out) {
    size_t words = 0, chars = 0;
    int in_word = 0;
    for (const unsigned char *p = (const unsigned char *)req->input; *p; p++) {
        if ((*p & 0xC0) != 0x80) chars++; /* count UTF-8 code points, not bytes */
        if (isspace(*p)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            words++;
        }
    }
    long long min = pg_json_int(req->config, "min-words", 1);
    if ((long long)words < min) {
        pg_buf_printf(out, "the input has %zu word(s), fewer than min-words = %lld", words, min);
        return PG_INVALID_INPUT;
    }
    pg_log(PG_LOG_INFO, "%zu word(s) in task `%s`", words, req->task);
    pg_buf_printf(out, "{\"words\": %zu, \"chars\": %zu, \"language\": \"c\"}", words, chars);
    return PG_OK;
}
