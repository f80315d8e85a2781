/* rules_eval.h -- running a plan (rules_parse.h) over one message or event.
 *
 * The caller describes the message in a rules_input_t (pointers into the
 * message, borrowed for the call) and owns a rules_scratch_t: the arena
 * where function results live and the JSON values an evaluation created,
 * reset between messages.  Both belong to one thread (a worker keeps one
 * scratch); the plan is shared read-only.  The payload is parsed as JSON
 * at most once per input, and only when a plan reads payload.* (the parsed
 * value stays in the input for every rule that matches the same message).
 */
#ifndef ANTENNA_RULES_EVAL_H
#define ANTENNA_RULES_EVAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "rules_parse.h"

typedef struct {
    uint8_t type; /* RULES_V_* */
    uint32_t len; /* STR */
    union {
        int64_t i; /* BOOL, INT */
        double d;
        const char *s; /* STR: not NUL-terminated */
        json_t *j;     /* JSON: borrowed (the input's or the scratch's) */
    } u;
} rules_val_t;

/* One message or event.  NULL strings read as null. */
typedef struct {
    const char *clientid, *username, *peer, *protocol, *event, *reason;
    const char *topic;
    uint32_t topic_len;
    const char *payload;
    uint32_t payload_len;
    int64_t qos, retain, timestamp, node;
    const uint8_t *props; /* MQTT 5 property block (msg_props), or NULL */
    uint32_t props_len;
    json_t *user_props; /* or the user properties as an object (the test endpoint) */
    /* set by the evaluator */
    json_t *json; /* the parsed payload (owned), when json_done */
    uint8_t json_done;
} rules_input_t;

/* Release what evaluation attached to in (the parsed payload). */
void rules_input_done(rules_input_t *in);

typedef struct {
    char *buf;
    size_t cap, used;
    json_t **owned; /* JSON values made by json_decode, released at reset */
    uint32_t nowned, cap_owned;
    char err[200]; /* after a failed evaluation */
} rules_scratch_t;

void rules_scratch_init(rules_scratch_t *sc, size_t cap);
void rules_scratch_reset(rules_scratch_t *sc);
void rules_scratch_free(rules_scratch_t *sc);

/* The WHERE of p over in: 1 passes (no WHERE, or exactly true), 0 does
 * not, -1 an evaluation error (sc->err). */
int rules_eval_where(const rules_plan_t *p, rules_input_t *in, rules_scratch_t *sc);
/* The output row: a new JSON object, or NULL with sc->err. */
json_t *rules_eval_row(const rules_plan_t *p, rules_input_t *in, rules_scratch_t *sc);
/* One expression, nodes[start..end), into *out (valid until the scratch
 * is reset).  0, or -1 with sc->err. */
int rules_eval_expr(const rules_plan_t *p, uint32_t start, uint32_t end, rules_input_t *in,
                    rules_scratch_t *sc, rules_val_t *out);
/* A value as JSON (a new reference; strings that are not UTF-8 are kept
 * as bytes). */
json_t *rules_val_json(const rules_val_t *v);

#endif
