/* rules_action.h -- what a rule feeds: the action interface.
 *
 * An action is an ops table (republish today; Kafka, InfluxDB and webhook
 * sinks implement the same later) and its instance.  `init` runs on the
 * thread that builds the rule (main at start-up, an API thread later) with
 * the action's JSON definition; `emit` runs on the worker that evaluated
 * the rule, once per output row (a JSON object, borrowed for the call) with
 * the message (NULL for an event); it must not block: a sink queues the row
 * for its own thread.  `free` runs wherever the rule's last reference goes
 * (possibly a worker): a sink hands its teardown to its thread.  An action
 * is immutable after init apart from its own atomics.
 */
#ifndef ANTENNA_RULES_ACTION_H
#define ANTENNA_RULES_ACTION_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct worker_s;
struct msg_s;
struct server_s;

enum { RULES_EMIT_OK = 0, RULES_EMIT_FAILED, RULES_EMIT_DROPPED, RULES_EMIT_RESULTS };

typedef struct rules_action_s rules_action_t;

typedef struct {
    const char *type; /* "republish" */
    /* Check and take the definition (def: the action's object); 0, or -1
     * with err filled ("topic: ..."). */
    int (*init)(rules_action_t *a, json_t *def, char *err, size_t errlen);
    /* RULES_EMIT_*, counted per action and worker by the caller. */
    int (*emit)(rules_action_t *a, struct worker_s *w, json_t *row, const struct msg_s *m);
    void (*free)(rules_action_t *a);
    /* Optional, any thread: more fields for the action's metrics object
     * (the sink action: its sink and what that sink holds, "queued"). */
    void (*describe)(const rules_action_t *a, json_t *obj);
} rules_action_ops_t;

struct rules_action_s {
    const rules_action_ops_t *ops;
    struct server_s *srv;
    uint32_t module_index; /* the rules module's worker context (module_worker_ctx) */
    void *impl;            /* the type's own state */
};

/* A new action from its definition ({"type": ..., ...}); NULL with err. */
rules_action_t *rules_action_new(struct server_s *srv, uint32_t module_index, json_t *def,
                                 char *err, size_t errlen);
void rules_action_free(rules_action_t *a);

/* Templates: text with ${name} placeholders, each a column of the row
 * (strings as they are, other values as JSON, missing ones empty).
 * rules_template_check: 0, or -1 with err (an unclosed "${").
 * rules_template_render: the text into out[cap]; its length, or -1 when
 * it does not fit. */
int rules_template_check(const char *tpl, char *err, size_t errlen);
long rules_template_render(const char *tpl, json_t *row, char *out, size_t cap);

/* The republish action's deferred publish (rules.c): queue m (a new
 * reference handed over) to be routed on worker w at its next turn;
 * RULES_EMIT_OK, or RULES_EMIT_DROPPED past rules.max_pending. */
int rules_republish_post(struct worker_s *w, uint32_t module_index, struct msg_s *m);

#endif
