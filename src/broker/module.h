/* module.h -- the table of modules: how a feature plugs into the broker.
 *
 * A module is one `module_t` (a name, an optional configuration section,
 * life-cycle hooks, a per-worker context and tick) listed once in
 * src/modules/modules.c.  The broker calls its hooks in this order:
 *
 *   conf_defaults   main thread, before conf_load: the section's defaults
 *   conf_load       main thread, while the file is read: the section's keys
 *                   through conf_sec_* (conf.h); errors are file:line:key
 *                   and the broker refuses to start
 *   init            server_init, after the workers exist and the store's
 *                   sessions are loaded, before any thread runs: register
 *                   event listeners (event.h) and inbox kinds, allocate
 *                   the module's state (mi->state)
 *   worker_init     server_init, main thread, once per worker after init:
 *                   the worker's context (*ctx), reachable from the worker
 *                   as module_worker_ctx(w, mi->index); may arm the tick
 *   start           server_start, the workers running
 *   stop            server_stop, the workers still running: stop producing
 *                   (end the module's own threads)
 *   worker_free     server_free, main thread, the workers joined
 *   free            server_free, after every worker_free
 *
 * Hooks are optional (NULL).  A failing init, worker_init or start stops
 * the start-up (logged by the module); free and worker_free are then still
 * called for what was set up, so they accept a partial state.
 *
 * The tick: module_tick_arm(w, mi, delay_ms) arms the module's timer on
 * worker w's wheel (from worker_init, or later on w's own thread); when it
 * fires, tick(mi, w, ctx) runs on w and returns the delay to the next call
 * in ms, or MODULE_TICK_OFF.  No module costs anything per message: the
 * hot paths reach a module only through the event registry or an inbox
 * kind it registered.
 *
 * Threads: module_inst_t is written by the main thread before the workers
 * start and read-only afterwards (conf and state pointers; what state
 * points to is the module's business).  A worker's context is touched by
 * that worker only, between worker_init and worker_free.
 */
#ifndef ANTENNA_MODULE_H
#define ANTENNA_MODULE_H

#include <stdint.h>

#include "conf.h"
#include "server.h"
#include "tw.h"

typedef struct module_inst_s module_inst_t;
struct json_t; /* jansson */

/* ---- the management API, metrics and readiness (src/api) ----
 *
 * A module answers requests under /api/v1/ with a table of routes, adds
 * its own families to /metrics and may hold /health/ready at 503.  All
 * three run on the API's threads, concurrently with the workers and with
 * each other: a module reads its own state under its own lock or through
 * atomics, or asks a worker with an inbox kind.  The API authenticates the
 * request first (api.keys, users) as for its own endpoints. */
enum {
    MODULE_API_GET = 1,
    MODULE_API_POST = 2,
    MODULE_API_DELETE = 4,
    MODULE_API_PUT = 8,
    MODULE_API_PATCH = 16
};

typedef struct module_api_req_s {
    const char *method; /* "GET" (also for HEAD), "POST", "PUT", "PATCH", "DELETE" */
    const char *tail;   /* a prefix route: the rest of the path; else "" */
    const char *body;   /* NUL-terminated request body, or NULL */
    size_t body_len;
    void *conn;               /* the API's (module_api_query) */
    const char *content_type; /* the request's Content-Type, or NULL */
} module_api_req_t;

typedef struct {
    const char *path; /* after "/api/v1/": "nodes", or "nodes/" with prefix; a
                       * '*' matches one segment ("devices/<*>/commands", the
                       * tail then starts at the '*'); exact and '*' routes
                       * win over plain prefix routes of any module */
    int prefix;       /* 1: path is a prefix, the rest is req->tail */
    unsigned methods; /* MODULE_API_* */
    /* The HTTP status; *out the JSON answer (a new reference; NULL: no
     * body).  For an error, module_api_error() fills *out. */
    int (*fn)(module_inst_t *mi, const module_api_req_t *req, struct json_t **out);
} module_api_route_t;

/* A query parameter of the request, or NULL. */
const char *module_api_query(const module_api_req_t *req, const char *key);
/* *out = {"error": text, "code": code} as the API's own errors; returns
 * status. */
int module_api_error(struct json_t **out, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* An answer that is text, not JSON (an export in CSV or JSON lines): put
 * the result in *out with the status; the API sends text with type. */
struct json_t *module_api_text(const char *type, const char *text, size_t len);

/* /metrics: text in the Prometheus exposition format. */
typedef struct module_metrics_s module_metrics_t;
void module_metrics_family(module_metrics_t *mm, const char *name, const char *type,
                           const char *help);
void module_metrics_printf(module_metrics_t *mm, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A module's plain counters, one family each: name, help and where the
 * value is (an _Atomic uint64_t at `off` bytes into the module's state). */
typedef struct {
    const char *name, *help;
    size_t off;
} module_counter_t;
void module_metrics_counters(module_metrics_t *mm, const void *state, const module_counter_t *c,
                             size_t n);

#define MODULE_TICK_OFF UINT64_MAX

typedef struct module_s {
    const char *name; /* for the log, "heartbeat" */
    /* configuration: a top-level section of the file, or section NULL */
    const char *section;
    size_t conf_size; /* bytes of the module's own config struct */
    void (*conf_defaults)(void *conf);
    int (*conf_load)(conf_sec_t *s, void *conf);
    void (*conf_walk)(const void *conf, conf_visit_fn fn, void *ud); /* GET /api/v1/config */
    /* life cycle (see above) */
    int (*init)(module_inst_t *mi);
    int (*start)(module_inst_t *mi);
    void (*stop)(module_inst_t *mi);
    void (*free)(module_inst_t *mi);
    /* per worker */
    int (*worker_init)(module_inst_t *mi, worker_t *w, void **ctx);
    void (*worker_free)(module_inst_t *mi, worker_t *w, void *ctx);
    uint64_t (*tick)(module_inst_t *mi, worker_t *w, void *ctx);
    /* the end of worker w's loop turn, once after module_turn_end_ask(w,
     * mi) in that turn (a batch of the turn's work handed on at once) */
    void (*turn_end)(module_inst_t *mi, worker_t *w, void *ctx);
    /* the management API (above); each optional */
    const module_api_route_t *api_routes; /* ends with a NULL path */
    void (*metrics)(module_inst_t *mi, module_metrics_t *mm);
    /* NULL when ready; else why not (a static or module-owned string):
     * /health/ready answers 503 with it. */
    const char *(*unready)(module_inst_t *mi);
    /* live reload (reload.c, SIGHUP or `antenna ctl reload`): the keys of
     * the section that can change live (NULL-terminated, "rules"); when
     * one of them differs from the values last applied, reload() gets the
     * section's new values (already checked by conf_load) on the reloading
     * thread: apply them and return 0, or -1 with err (nothing of the
     * module changed; the reload reports the error).  mi->conf keeps the
     * start-up values.  Other keys of the section need a restart, as the
     * core's keys do.  A section without conf_walk is never compared. */
    const char *const *live_keys;
    int (*reload)(module_inst_t *mi, const void *conf, char *err, size_t errlen);
} module_t;

/* One module in a running server (server_t.modules[index]). */
struct module_inst_s {
    const module_t *m;
    uint32_t index;
    server_t *srv;
    const void *conf; /* the section's values (srv->conf), or NULL */
    void *state;      /* the module's, set by init */
    uint8_t inited;   /* init succeeded: free will be called */
};

/* A module's place in a worker (worker_t.modules[index]). */
typedef struct module_slot_s {
    void *ctx;
    tw_timer_t timer; /* the tick */
    worker_t *w;
    module_inst_t *mi;
    struct module_slot_s *turn_next; /* worker_t.turn_end_head, while asked */
    uint8_t turn_asked;
} module_slot_t;

/* The list (src/modules/modules.c), NULL-terminated. */
extern const module_t *const module_list[];

/* main, after conf_defaults and before conf_load: declare every module's
 * section and fill its defaults. */
void module_conf_defaults(conf_t *c);

/* server.c: each step over every module in list order. */
int module_init_all(server_t *srv); /* init, then worker_init on each worker */
int module_start_all(server_t *srv);
void module_stop_all(server_t *srv); /* in reverse order */
void module_free_all(server_t *srv); /* free, in reverse order */
/* reload.c: the module whose live_keys name the configuration path p
 * ("rules.rules", "rules.rules[?].sql"), or NULL. */
const module_inst_t *module_live_key(const server_t *srv, const char *p);
/* worker.c (worker_free): every module's worker_free for w. */
void module_worker_free(worker_t *w);

/* Arm (or re-arm) mi's tick on worker w in delay_ms; w's thread, or the
 * main thread before the workers start. */
void module_tick_arm(worker_t *w, const module_inst_t *mi, uint64_t delay_ms);

/* Call mi's turn_end on w at the end of this turn (once however often it
 * is asked); w's thread.  Nothing is walked in a turn where nobody asked. */
static inline void module_turn_end_ask(worker_t *w, const module_inst_t *mi)
{
    module_slot_t *slot = &w->modules[mi->index];
    if (!slot->turn_asked) {
        slot->turn_asked = 1;
        slot->turn_next = w->turn_end_head;
        w->turn_end_head = slot;
    }
}
/* worker.c, end of a turn: run the turn_end hooks asked for. */
void module_turn_end_run(worker_t *w);

static inline void *module_worker_ctx(const worker_t *w, uint32_t index)
{
    return w->modules[index].ctx;
}

#endif
