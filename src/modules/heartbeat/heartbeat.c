/* heartbeat.c -- the example module: a liveness message per worker.
 *
 * With heartbeat.interval set, each worker publishes, from its own tick,
 * on TOPIC/N (N: the worker's number) at once and then every interval
 * seconds:
 *
 *   {"worker":N,"seq":S,"uptime_s":U,"clients":C}
 *
 * S counts this worker's beats from 1, C is the clients connected to it.
 * A worker whose loop is stuck stops beating, so a monitor subscribed to
 * TOPIC/+ sees which thread hangs (retained with heartbeat.retain, so a
 * monitor that connects later still sees the last beat of each).
 *
 * It shows every part of module.h: its own section (read with conf_sec_*,
 * one rule across keys), init and free (the module's state), start and
 * stop (a log line; stop ends the beats while the workers still run), a
 * per-worker context (the topic of that worker, its count of beats) made
 * before the workers start and freed after they are joined, and a tick.
 *
 * Threads: the state's `stopping` is written by the main thread (stop)
 * and read by the workers (tick): atomic.  `beats` is summed by the main
 * thread after the workers are joined (worker_free).  A context is used by
 * its worker only.
 */
#include "heartbeat.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "module.h"
#include "msg.h"
#include "router.h"

typedef struct {
    uint32_t interval; /* seconds; 0 = off */
    char topic[200];   /* the prefix: each worker publishes on TOPIC/N */
    uint8_t retain;
} heartbeat_conf_t;

typedef struct {
    _Atomic int stopping; /* set by stop: no more beats */
    uint64_t beats;       /* summed at worker_free */
} heartbeat_state_t;

typedef struct {
    char topic[224]; /* TOPIC/N */
    uint16_t topic_len;
    uint64_t seq;
} heartbeat_worker_t;

static void hb_defaults(void *conf)
{
    heartbeat_conf_t *c = conf;
    c->interval = 0;
    snprintf(c->topic, sizeof(c->topic), "%s", "antenna/heartbeat");
    c->retain = 0;
}

static const conf_key_t hb_keys[] = {
    CONF_KEY_U32(heartbeat_conf_t, interval, "interval", 0, 86400),
    CONF_KEY_STR(heartbeat_conf_t, topic, "topic", CONF_SEC_NONEMPTY),
    CONF_KEY_BOOL(heartbeat_conf_t, retain, "retain"),
};

static int hb_load(conf_sec_t *s, void *conf)
{
    heartbeat_conf_t *c = conf;
    if (conf_sec_keys(s, CONF_KEYS(hb_keys), c) < 0)
        return -1;
    if (strpbrk(c->topic, "+#") != NULL)
        return conf_sec_fail(s, "topic", "\"%.60s\": a topic to publish on has no wildcards",
                             c->topic);
    return 0;
}

static void hb_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(hb_keys), conf, fn, ud);
}

static int hb_init(module_inst_t *mi)
{
    const heartbeat_conf_t *c = mi->conf;
    if (c->interval == 0)
        return 0; /* off: no state, no context, no tick */
    mi->state = an_calloc(1, sizeof(heartbeat_state_t));
    return 0;
}

static int hb_worker_init(module_inst_t *mi, worker_t *w, void **ctx)
{
    const heartbeat_conf_t *c = mi->conf;
    if (mi->state == NULL)
        return 0;
    heartbeat_worker_t *hw = an_calloc(1, sizeof(*hw));
    int n = snprintf(hw->topic, sizeof(hw->topic), "%s/%" PRIu32, c->topic, w->id);
    hw->topic_len = (uint16_t)n; /* fits: topic is < 200 bytes */
    *ctx = hw;
    module_tick_arm(w, mi, 0); /* the first beat as soon as the worker runs */
    return 0;
}

static uint64_t hb_tick(module_inst_t *mi, worker_t *w, void *ctx)
{
    const heartbeat_conf_t *c = mi->conf;
    heartbeat_state_t *st = mi->state;
    heartbeat_worker_t *hw = ctx;
    if (atomic_load_explicit(&st->stopping, memory_order_relaxed))
        return MODULE_TICK_OFF;
    char payload[160];
    int n = snprintf(payload, sizeof(payload),
                     "{\"worker\":%" PRIu32 ",\"seq\":%" PRIu64 ",\"uptime_s\":%" PRIu64
                     ",\"clients\":%" PRIu64 "}",
                     w->id, ++hw->seq, (w->now - w->srv->started_ms) / 1000u,
                     (uint64_t)STAT_GET(w->stats.clients_connected));
    msg_t *m = msg_new((const uint8_t *)hw->topic, hw->topic_len, (const uint8_t *)payload,
                       (uint32_t)n, 0, c->retain);
    router_publish(w, m, NULL);
    msg_unref(&m);
    return (uint64_t)c->interval * 1000u;
}

static int hb_start(module_inst_t *mi)
{
    const heartbeat_conf_t *c = mi->conf;
    if (mi->state)
        log_info("heartbeat: publishing on %s/0..%" PRIu32 " every %" PRIu32 " s", c->topic,
                 mi->srv->nworkers - 1, c->interval);
    return 0;
}

static void hb_stop(module_inst_t *mi)
{
    heartbeat_state_t *st = mi->state;
    if (st)
        atomic_store(&st->stopping, 1);
}

static void hb_worker_free(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)w;
    heartbeat_worker_t *hw = ctx;
    heartbeat_state_t *st = mi->state;
    if (hw == NULL)
        return;
    st->beats += hw->seq;
    free(hw);
}

static void hb_free(module_inst_t *mi)
{
    heartbeat_state_t *st = mi->state;
    if (st == NULL)
        return;
    log_info("heartbeat: stopped after %" PRIu64 " beats", st->beats);
    free(st);
    mi->state = NULL;
}

const module_t heartbeat_module = {
    .name = "heartbeat",
    .section = "heartbeat",
    .conf_size = sizeof(heartbeat_conf_t),
    .conf_defaults = hb_defaults,
    .conf_load = hb_load,
    .conf_walk = hb_walk,
    .init = hb_init,
    .start = hb_start,
    .stop = hb_stop,
    .free = hb_free,
    .worker_init = hb_worker_init,
    .worker_free = hb_worker_free,
    .tick = hb_tick,
};
