/* rules_int.h -- the rule engine's shared internals: rules, rule sets, the
 * module state (rules.c) and the management API (rules_api.c).
 *
 * A rule is immutable once built and reference-counted: rule sets hold
 * references, and so does the state's list.  Its counters are per worker
 * (one writer each, padded to a cache line).  A rule set is an immutable
 * array of enabled rules, reference-counted by the workers that use it
 * (each worker holds the one it last received through WM_RULES).  The
 * state's list, the current set and the consumer's filters change under
 * st->mu, on the main thread at start-up or an API thread later.
 */
#ifndef ANTENNA_RULES_INT_H
#define ANTENNA_RULES_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "module.h"
#include "router.h"
#include "rules_action.h"
#include "rules_eval.h"
#include "util.h"

#define RULES_ID_MAX 64
#define RULES_MAX_ACTIONS 8
#define RULES_FILE_JSON 6144 /* bytes of the file's rules, as compact JSON */

typedef struct {
    uint8_t enabled;
    uint32_t max_pending;
    char events[RULES_EV_COUNT][24];
    uint32_t nevents;
    char json[RULES_FILE_JSON]; /* the file's rules: a JSON array of definitions */
} rules_conf_t;

typedef struct {
    an_counter_t matched, passed, failed;
    an_counter_t act[RULES_MAX_ACTIONS][RULES_EMIT_RESULTS];
} __attribute__((aligned(64))) rules_stats_t;

typedef struct rules_rule_s {
    _Atomic uint32_t refs;
    char id[RULES_ID_MAX];
    uint8_t enabled;
    json_t *def; /* the definition: {"id", "sql", "enabled", "actions"} */
    rules_plan_t *plan;
    rules_action_t *actions[RULES_MAX_ACTIONS];
    uint32_t nactions;
    rules_stats_t *stats; /* [nworkers] */
    uint32_t nworkers;
} rules_rule_t;

typedef struct {
    _Atomic uint32_t refs;
    uint32_t n;
    rules_rule_t *r[];
} rules_set_t;

typedef struct {
    rules_set_t *set; /* this worker's, a reference */
    uint32_t pending; /* republishes posted, not yet routed */
    rules_scratch_t scratch;
} rules_worker_t;

typedef struct {
    server_t *srv;
    const rules_conf_t *conf;
    uint32_t index; /* module index */
    pthread_mutex_t mu;
    rules_rule_t **all; /* every rule, enabled or not, in creation order */
    uint32_t nall;
    rules_set_t *cur;            /* the set last published (a reference) */
    router_consumer_t *consumer; /* created at the first topic filter */
    char **subs;                 /* the consumer's filters */
    uint32_t nsubs;
    uint32_t listened; /* RULES_EV_* bits with an event handler */
} rules_state_t;

/* A rule from its definition; NULL with err ("sql: column 27: ...").  The
 * column of a parse error in *column when not NULL. */
rules_rule_t *rules_rule_build(rules_state_t *st, json_t *def, char *err, size_t errlen,
                               uint32_t *column);
void rules_rule_unref(rules_rule_t *r);
/* Under st->mu: publish a set of the enabled rules of st->all to every
 * worker and resubscribe the consumer.  0, or -1 with err. */
int rules_commit(rules_state_t *st, char *err, size_t errlen);
/* Under st->mu: the index of id in st->all, or -1. */
int rules_find(rules_state_t *st, const char *id);
/* A rule's definition and counters summed over the workers (a new
 * reference). */
json_t *rules_rule_json(const rules_rule_t *r);
/* The store: keep or delete a rule's definition (API threads). */
int rules_store_put(rules_state_t *st, const char *id, json_t *def);

extern const module_api_route_t rules_api_routes[];

#endif
