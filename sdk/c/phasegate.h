/*
 * phasegate.h — write phasegate plugins in C, over wit-bindgen's C bindings.
 *
 * `phasegate build` writes the bindings (bindings/{{world}}.h, .c, _component_type.o) from the
 * contract it runs, compiles with clang for wasm32-wasi and turns the module into a component.
 * Include this header in exactly one .c file (it defines the component's exports).
 *
 * A task:
 *
 *     #include "phasegate.h"
 *     PG_PLUGIN("shout", "0.1.0", "Upper-cases its input");
 *     pg_status_t pg_run(const pg_request_t *req, pg_buf_t *out) {
 *         if (req->input_len == 0) { pg_buf_puts(out, "empty input"); return PG_INVALID_INPUT; }
 *         pg_buf_puts(out, "{\"text\": ");
 *         pg_buf_json_string(out, req->input);
 *         pg_buf_puts(out, "}");
 *         return PG_OK;              // `out` is the JSON output; on an error, the message
 *     }
 *
 * A gate:
 *
 *     PG_PLUGIN("no-failures", "0.1.0", "");
 *     pg_verdict_kind_t pg_check(const pg_report_t *r, pg_buf_t *reason, pg_buf_t *evidence) {
 *         ...; pg_buf_printf(reason, "%zu task(s) failed", failed); return PG_FAIL;
 *     }
 *
 * Strings from the host arrive NUL-terminated here (copied once). The input, context and config
 * are JSON text (the input is whatever the pipeline's template rendered); `pg_json_int` reads a
 * top-level integer from a JSON object for simple configs.
 */
#ifndef PHASEGATE_H
#define PHASEGATE_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "{{world}}.h"

typedef {{world}}_string_t pg_string_t;

/* ---- growable text buffer ------------------------------------------------------------------ */

/** A NUL-terminated, growable string. Zero-initialise it: `pg_buf_t b = {0};`. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} pg_buf_t;

static inline void pg_buf_reserve(pg_buf_t *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data) abort(); /* out of memory: the host reports the trap */
    b->data = data;
    b->cap = cap;
}

/** Appends `n` bytes. */
static inline void pg_buf_put(pg_buf_t *b, const char *s, size_t n) {
    pg_buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

/** Appends a NUL-terminated string. */
static inline void pg_buf_puts(pg_buf_t *b, const char *s) { pg_buf_put(b, s, strlen(s)); }

/** Appends printf-style. */
static inline void pg_buf_printf(pg_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    pg_buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/** Appends `s` as a JSON string literal (quoted and escaped). */
static inline void pg_buf_json_string(pg_buf_t *b, const char *s) {
    pg_buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': pg_buf_put(b, "\\\"", 2); break;
        case '\\': pg_buf_put(b, "\\\\", 2); break;
        case '\n': pg_buf_put(b, "\\n", 2); break;
        case '\r': pg_buf_put(b, "\\r", 2); break;
        case '\t': pg_buf_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) pg_buf_printf(b, "\\u%04x", *p);
            else pg_buf_put(b, (const char *)p, 1);
        }
    }
    pg_buf_put(b, "\"", 1);
}

/* ---- host calls ---------------------------------------------------------------------------- */

typedef enum { PG_LOG_TRACE = 0, PG_LOG_DEBUG, PG_LOG_INFO, PG_LOG_WARN, PG_LOG_ERROR } pg_level_t;

/** Logs a line (printf-style); kept with the task's result in the progress file. */
static inline void pg_log(pg_level_t level, const char *fmt, ...) {
    pg_buf_t b = {0};
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    pg_buf_reserve(&b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b.data, (size_t)n + 1, fmt, ap);
    va_end(ap);
    pg_string_t msg = {(uint8_t *)b.data, (size_t)n};
    phasegate_plugin_host_log((phasegate_plugin_host_level_t)level, &msg);
    free(b.data);
}

/** Reports progress of long work: `done` of `total` units. */
static inline void pg_progress(uint32_t done, uint32_t total, const char *message) {
    pg_string_t msg = {(uint8_t *)message, strlen(message)};
    phasegate_plugin_host_progress(done, total, &msg);
}

/* ---- JSON, the little a simple plugin needs -------------------------------------------------- */

/**
 * The integer value of the top-level key `key` of the JSON object `json`, or `fallback` when
 * the key is missing or not an integer. A scanner for flat configs, not a JSON parser: use a
 * real one (cJSON, jsmn) for nested data.
 */
static inline long long pg_json_int(const char *json, const char *key, long long fallback) {
    size_t klen = strlen(key);
    int depth = 0;
    for (const char *p = json; *p; p++) {
        if (*p == '{' || *p == '[') depth++;
        else if (*p == '}' || *p == ']') depth--;
        else if (*p == '"') {
            const char *start = p + 1;
            const char *end = start;
            while (*end && *end != '"') end += (*end == '\\' && end[1]) ? 2 : 1;
            if (!*end) return fallback;
            p = end;
            if (depth != 1 || (size_t)(end - start) != klen || strncmp(start, key, klen) != 0) continue;
            const char *v = end + 1;
            while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') v++;
            if (*v != ':') continue;
            v++;
            char *after;
            long long value = strtoll(v, &after, 10);
            return after == v ? fallback : value;
        }
    }
    return fallback;
}

static inline char *pg__cstr(const pg_string_t *s) {
    char *out = malloc(s->len + 1);
    if (!out) abort();
    memcpy(out, s->ptr, s->len);
    out[s->len] = '\0';
    return out;
}

/* ---- the plugin ---------------------------------------------------------------------------- */

/** Declares the plugin's name, version and description (its `metadata` export). */
#define PG_PLUGIN(NAME_, VERSION_, DESCRIPTION_) PG__PLUGIN(NAME_, VERSION_, DESCRIPTION_, NULL)

/** As `PG_PLUGIN`, publishing `SCHEMA_`, the JSON Schema (text) of the config the plugin takes:
 * `phasegate validate` and `run` check every `config` in a pipeline against it. */
#define PG_PLUGIN_WITH_SCHEMA(NAME_, VERSION_, DESCRIPTION_, SCHEMA_)                           \
    PG__PLUGIN(NAME_, VERSION_, DESCRIPTION_, SCHEMA_)

/* The `metadata` export both declare; SCHEMA_ is the schema's text, or NULL for none. */
#define PG__PLUGIN(NAME_, VERSION_, DESCRIPTION_, SCHEMA_)                                      \
    void exports_{{world}}_metadata({{world}}_plugin_metadata_t *ret) {                        \
        const char *schema = SCHEMA_;                                                          \
        {{world}}_string_dup(&ret->name, NAME_);                                               \
        {{world}}_string_dup(&ret->version, VERSION_);                                         \
        {{world}}_string_dup(&ret->description, DESCRIPTION_);                                 \
        ret->kind = PG__KIND;                                                                  \
        ret->config_schema.is_some = schema != NULL;                                           \
        if (schema) {{world}}_string_dup(&ret->config_schema.val, schema);                     \
    }                                                                                          \
    typedef int pg__plugin_declared

#define PG__WORLD_{{world}} 1

#if defined(PG__WORLD_task)
#define PG__KIND PHASEGATE_PLUGIN_TYPES_PLUGIN_KIND_TASK

/** One attempt of a task. Every string is NUL-terminated. */
typedef struct {
    const char *run_id;
    const char *phase;
    const char *task;
    uint32_t attempt;
    /** The rendered input, as the pipeline's template produced it. */
    const char *input;
    size_t input_len;
    /** The context (JSON): the whole context with `grants = { context = true }` for this task,
     *  otherwise only `{"run": {"id"}, "pipeline": {"name"}}`. */
    const char *context;
    /** The task's config table (JSON object; `{}` when the pipeline gives none). */
    const char *config;
} pg_request_t;

/** What `pg_run` returns. Anything but `PG_OK` makes `out` the error message. */
typedef enum {
    PG_OK = 0,
    /** The work failed; the host retries it (up to the task's `retries`). */
    PG_FAILED,
    /** The input is not acceptable; retrying cannot help. */
    PG_INVALID_INPUT,
    /** The config is not acceptable; retrying cannot help. */
    PG_INVALID_CONFIG,
} pg_status_t;

/** Implement this: write the output JSON (or an error message) to `out`. */
pg_status_t pg_run(const pg_request_t *req, pg_buf_t *out);

bool exports_task_run(task_task_request_t *request, task_string_t *ret, task_task_error_t *err) {
    const char *config = request->config.len ? pg__cstr(&request->config) : "{}";
    pg_request_t req = {
        .run_id = pg__cstr(&request->run_id),
        .phase = pg__cstr(&request->phase),
        .task = pg__cstr(&request->task),
        .attempt = request->attempt,
        .input = pg__cstr(&request->input),
        .input_len = request->input.len,
        .context = pg__cstr(&request->context),
        .config = config,
    };
    pg_buf_t out = {0};
    pg_buf_reserve(&out, 0);
    out.data[0] = '\0';
    pg_status_t status = pg_run(&req, &out);
    if (status == PG_OK) {
        task_string_dup_n(ret, out.data, out.len);
        free(out.data);
        return true;
    }
    switch (status) {
    case PG_INVALID_INPUT: err->tag = PHASEGATE_PLUGIN_TYPES_TASK_ERROR_INVALID_INPUT; break;
    case PG_INVALID_CONFIG: err->tag = PHASEGATE_PLUGIN_TYPES_TASK_ERROR_INVALID_CONFIG; break;
    default: err->tag = PHASEGATE_PLUGIN_TYPES_TASK_ERROR_FAILED; break;
    }
    /* Every case of task-error holds one string: `failed` is the union's first member. */
    task_string_dup_n(&err->val.failed, out.data, out.len);
    free(out.data);
    return false;
}

#elif defined(PG__WORLD_gate)
#define PG__KIND PHASEGATE_PLUGIN_TYPES_PLUGIN_KIND_GATE

/** One task's outcome, as a gate sees it. */
typedef struct {
    const char *task;
    /** The output JSON, or NULL when the task failed. */
    const char *output;
    /** `failed`, `invalid-input`, `timeout`... or NULL when the task succeeded. */
    const char *error_kind;
    /** The failure's message, or NULL. */
    const char *error_message;
    uint32_t attempts;
    uint64_t duration_ms;
} pg_outcome_t;

/** What a task's last attempt used, as the host measured it (`phasegate:plugin/usage`). */
typedef struct {
    uint64_t wall_us;
    /** Whether `fuel` is set: only when the task had a fuel budget. */
    bool has_fuel;
    uint64_t fuel;
    /** Linear memory at its largest, bytes. */
    uint64_t memory;
    uint64_t log_bytes;
    /** Bytes written into read-write directory grants. */
    uint64_t written;
    /** Files and directories opened, and sockets created or accepted. */
    uint64_t opened;
} pg_usage_t;

/** Asks the host what task `task` (an outcome's `task`) used; false, and `*out` untouched, when
 * it has no figures (a task that never ran). */
static inline bool pg_usage(const char *task, pg_usage_t *out) {
    gate_string_t name = {(uint8_t *)task, strlen(task)};
    phasegate_plugin_usage_task_usage_t u;
    if (!phasegate_plugin_usage_of_task(&name, &u)) return false;
    *out = (pg_usage_t){u.wall_us, u.fuel.is_some, u.fuel.val, u.memory, u.log_bytes, u.written, u.opened};
    return true;
}

/** The phase a gate judges. */
typedef struct {
    const char *run_id;
    const char *phase;
    size_t count;
    const pg_outcome_t *outcomes;
    const char *context;
    /** The gate's config table (JSON object; `{}` when the pipeline gives none). */
    const char *config;
} pg_report_t;

typedef enum { PG_PASS = 0, PG_WARN, PG_FAIL } pg_verdict_kind_t;

/** Implement this: the verdict, its reason, and optional evidence (JSON; leave empty for none). */
pg_verdict_kind_t pg_check(const pg_report_t *report, pg_buf_t *reason, pg_buf_t *evidence);

static inline const char *pg__failure_kind(phasegate_plugin_types_failure_kind_t kind) {
    static const char *names[] = {"failed", "invalid-input", "invalid-config", "invalid-output",
                                  "trap",   "timeout",       "limit",          "host"};
    return kind < sizeof names / sizeof names[0] ? names[kind] : "unknown";
}

void exports_gate_check(gate_phase_report_t *report, gate_verdict_t *ret) {
    size_t count = report->outcomes.len;
    pg_outcome_t *outcomes = calloc(count ? count : 1, sizeof *outcomes);
    if (!outcomes) abort();
    for (size_t i = 0; i < count; i++) {
        phasegate_plugin_types_task_outcome_t *o = &report->outcomes.ptr[i];
        outcomes[i].task = pg__cstr(&o->task);
        outcomes[i].output = o->output.is_some ? pg__cstr(&o->output.val) : NULL;
        outcomes[i].error_kind = o->error.is_some ? pg__failure_kind(o->error.val.kind) : NULL;
        outcomes[i].error_message = o->error.is_some ? pg__cstr(&o->error.val.message) : NULL;
        outcomes[i].attempts = o->attempts;
        outcomes[i].duration_ms = o->duration_ms;
    }
    pg_report_t r = {
        .run_id = pg__cstr(&report->run_id),
        .phase = pg__cstr(&report->phase),
        .count = count,
        .outcomes = outcomes,
        .context = pg__cstr(&report->context),
        .config = report->config.len ? pg__cstr(&report->config) : "{}",
    };
    pg_buf_t reason = {0}, evidence = {0};
    pg_buf_reserve(&reason, 0);
    reason.data[0] = '\0';
    pg_verdict_kind_t kind = pg_check(&r, &reason, &evidence);
    ret->kind = kind == PG_PASS   ? PHASEGATE_PLUGIN_TYPES_VERDICT_KIND_PASS
                : kind == PG_WARN ? PHASEGATE_PLUGIN_TYPES_VERDICT_KIND_WARN
                                  : PHASEGATE_PLUGIN_TYPES_VERDICT_KIND_FAIL;
    gate_string_dup_n(&ret->reason, reason.data, reason.len);
    ret->evidence.is_some = evidence.len > 0;
    if (evidence.len > 0) gate_string_dup_n(&ret->evidence.val, evidence.data, evidence.len);
    free(reason.data);
    free(evidence.data);
}
#endif

#endif /* PHASEGATE_H */
