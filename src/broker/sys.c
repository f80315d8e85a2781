/* sys.c -- $SYS/broker/... topics: the module "sys" (module.h).
 *
 * Worker 0 publishes them, retained, once at start and then every
 * mqtt.sys_interval seconds from its module tick, through router_publish
 * like any other message.  Figures are sums of the per-worker counters,
 * read without locks (each counter has one writer).  The module has no
 * section of its own: its one key stays mqtt.sys_interval (conf.c), where
 * configurations have always had it.
 *
 * Also here, not part of the module: the memory high-water check (worker
 * 0's mem_timer, armed by server.c) and the resident set size it reads.
 */
#include "sys.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#include "auth_chain.h"
#include "auth_http.h"
#include "auth_passwd.h"
#include "auth_redis.h"
#include "module.h"
#include "msg.h"
#include "retain.h"
#include "router.h"
#include "store.h"

static void publish(worker_t *w, const char *topic, const char *value)
{
    msg_t *m = msg_new((const uint8_t *)topic, (uint16_t)strlen(topic), (const uint8_t *)value,
                       (uint32_t)strlen(value), 0, 1);
    msg_set_origin(m, &msg_origin_sys);
    router_publish(w, m, NULL);
    msg_unref(&m);
}

static void publish_u64(worker_t *w, const char *topic, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    publish(w, topic, buf);
}

/* The counters of the asynchronous auth backends that are in the chain. */
static void publish_auth_backends(worker_t *w, server_t *srv)
{
    auth_backend_t *b;
    if (srv->auth && (b = auth_chain_backend(srv->auth, "http")) != NULL) {
        auth_http_stats_t st;
        auth_http_stats(b, &st);
        publish_u64(w, "$SYS/broker/auth/http/requests", st.requests);
        publish_u64(w, "$SYS/broker/auth/http/cache_hits", st.cache_hits);
        publish_u64(w, "$SYS/broker/auth/http/errors", st.errors);
        publish_u64(w, "$SYS/broker/auth/http/timeouts", st.timeouts);
        publish_u64(w, "$SYS/broker/auth/http/queue_full", st.queue_full);
    }
    if (srv->auth && (b = auth_chain_backend(srv->auth, "password_file")) != NULL) {
        auth_passwd_stats_t st;
        auth_passwd_stats(b, &st);
        publish_u64(w, "$SYS/broker/auth/password/verified", st.verified);
        publish_u64(w, "$SYS/broker/auth/password/cache_hits", st.cache_hits);
        publish_u64(w, "$SYS/broker/auth/password/queue_full", st.queue_full);
    }
    if (srv->auth && (b = auth_chain_backend(srv->auth, "redis")) != NULL) {
        auth_redis_stats_t st;
        auth_redis_stats(b, &st);
        publish_u64(w, "$SYS/broker/auth/redis/lookups", st.lookups);
        publish_u64(w, "$SYS/broker/auth/redis/errors", st.errors);
        publish_u64(w, "$SYS/broker/auth/redis/queue_full", st.queue_full);
        publish_u64(w, "$SYS/broker/auth/redis/connects", st.connects);
    }
}

/* The tick, on worker 0: publish every $SYS topic, come back in
 * sys_interval seconds. */
static uint64_t sys_tick(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)mi;
    (void)ctx;
    server_t *srv = w->srv;
    uint64_t recv = 0, sent = 0, dropped = 0, bin = 0, bout = 0, conn = 0, total = 0;
    uint64_t ref_limit = 0, ref_rate = 0, ref_mem = 0, throttled = 0, slow = 0, qfull = 0;
    uint64_t bp_pauses = 0;
    uint64_t qrefused = 0, congested = 0, auth_ok = 0, auth_fail = 0, auth_banned = 0,
             acl_denied = 0;
    uint64_t takeovers = 0;
    uint64_t sessions = 0, inflight = 0, queued = 0;
    uint64_t pin[STAT_PKT_TYPES] = {0}, pout[STAT_PKT_TYPES] = {0}, qin[3] = {0}, qout[3] = {0};
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        worker_stats_t *st = &srv->workers[i].stats;
        sessions += STAT_GET(st->sessions);
        inflight += STAT_GET(st->inflight);
        queued += STAT_GET(st->queued);
        for (int p = 0; p < STAT_PKT_TYPES; p++) {
            pin[p] += STAT_GET(st->pkts_in[p]);
            pout[p] += STAT_GET(st->pkts_out[p]);
        }
        for (int q = 0; q < 3; q++) {
            qin[q] += STAT_GET(st->msgs_in_qos[q]);
            qout[q] += STAT_GET(st->msgs_out_qos[q]);
        }
        recv += STAT_GET(st->msgs_received);
        sent += STAT_GET(st->msgs_sent);
        dropped += STAT_GET(st->msgs_dropped);
        bin += STAT_GET(st->bytes_received);
        bout += STAT_GET(st->bytes_sent);
        conn += STAT_GET(st->clients_connected);
        total += STAT_GET(st->connections_total);
        ref_limit += STAT_GET(st->refused_limit);
        ref_rate += STAT_GET(st->refused_rate);
        ref_mem += STAT_GET(st->refused_memory);
        throttled += STAT_GET(st->throttled);
        bp_pauses += STAT_GET(st->backpressure_pauses);
        slow += STAT_GET(st->slow_disconnects);
        qfull += STAT_GET(st->dropped_queue_full);
        qrefused += STAT_GET(st->refused_queue_full);
        congested += STAT_GET(st->congested);
        auth_ok += STAT_GET(st->auth_success);
        auth_fail += STAT_GET(st->auth_failure);
        auth_banned += STAT_GET(st->auth_banned);
        acl_denied += STAT_GET(st->acl_denied);
        takeovers += STAT_GET(st->takeovers_other_user);
    }
    pthread_rwlock_rdlock(&srv->trie_lock);
    uint64_t subs =
        trie_count(srv->trie) + router_node_exact_count(srv); /* + exact remote routes */
    pthread_rwlock_unlock(&srv->trie_lock);

    char buf[64];
    publish(w, "$SYS/broker/version", "antenna " ANTENNA_VERSION);
    snprintf(buf, sizeof(buf), "%" PRIu64 " seconds", (w->now - srv->started_ms) / 1000u);
    publish(w, "$SYS/broker/uptime", buf);
    const struct {
        const char *topic;
        uint64_t value;
    } figures[] = {
        {"$SYS/broker/clients/connected", conn},
        {"$SYS/broker/clients/total", total},
        {"$SYS/broker/messages/received", recv},
        {"$SYS/broker/messages/sent", sent},
        {"$SYS/broker/messages/dropped", dropped},
        {"$SYS/broker/bytes/received", bin},
        {"$SYS/broker/bytes/sent", bout},
        {"$SYS/broker/subscriptions/count", subs},
        {"$SYS/broker/retained messages/count", retain_count(srv->retain)},
        {"$SYS/broker/limits/refused/max_connections", ref_limit},
        {"$SYS/broker/limits/refused/connection_rate", ref_rate},
        {"$SYS/broker/limits/refused/memory", ref_mem},
        {"$SYS/broker/limits/throttled", throttled},
        {"$SYS/broker/limits/backpressure_pauses", bp_pauses},
        {"$SYS/broker/limits/slow_subscribers_disconnected", slow},
        {"$SYS/broker/limits/dropped_queue_full", qfull},
        {"$SYS/broker/limits/refused_queue_full", qrefused},
        {"$SYS/broker/limits/worker_congested", congested},
        {"$SYS/broker/memory/rss", sys_rss_bytes()},
        {"$SYS/broker/auth/success", auth_ok},
        {"$SYS/broker/auth/failure", auth_fail},
        {"$SYS/broker/auth/banned", auth_banned},
        {"$SYS/broker/auth/acl_denied", acl_denied},
        {"$SYS/broker/auth/takeovers_other_user", takeovers},
        {"$SYS/broker/sessions/count", sessions},
        {"$SYS/broker/messages/inflight", inflight},
        {"$SYS/broker/messages/queued", queued},
    };
    for (size_t i = 0; i < sizeof(figures) / sizeof(figures[0]); i++)
        publish_u64(w, figures[i].topic, figures[i].value);
    publish_auth_backends(w, srv);
    /* per packet type and per QoS, as /metrics has them */
    static const char *const names[STAT_PKT_TYPES] = {
        NULL,      "connect",  "connack",    "publish", "puback",      "pubrec",
        "pubrel",  "pubcomp",  "subscribe",  "suback",  "unsubscribe", "unsuback",
        "pingreq", "pingresp", "disconnect", "auth"};
    char topic[96];
    for (int p = 1; p < STAT_PKT_TYPES; p++) {
        snprintf(topic, sizeof(topic), "$SYS/broker/packets/received/%s", names[p]);
        publish_u64(w, topic, pin[p]);
        snprintf(topic, sizeof(topic), "$SYS/broker/packets/sent/%s", names[p]);
        publish_u64(w, topic, pout[p]);
    }
    for (int q = 0; q < 3; q++) {
        snprintf(topic, sizeof(topic), "$SYS/broker/messages/received/qos%d", q);
        publish_u64(w, topic, qin[q]);
        snprintf(topic, sizeof(topic), "$SYS/broker/messages/sent/qos%d", q);
        publish_u64(w, topic, qout[q]);
    }
    if (srv->store) {
        store_stats_t ss;
        store_stats(srv->store, &ss);
        publish_u64(w, "$SYS/broker/store/batches", ss.batches_committed);
        publish_u64(w, "$SYS/broker/store/syncs", ss.syncs);
        publish_u64(w, "$SYS/broker/store/last_sync_us", ss.last_sync_us);
    }

    return (uint64_t)srv->conf.sys_interval * 1000u;
}

/* Worker 0 publishes, at once and then every sys_interval (0: never). */
static int sys_worker_init(module_inst_t *mi, worker_t *w, void **ctx)
{
    (void)ctx;
    if (w->id == 0 && w->srv->conf.sys_interval)
        module_tick_arm(w, mi, 0);
    return 0;
}

const module_t sys_module = {
    .name = "sys",
    .worker_init = sys_worker_init,
    .tick = sys_tick,
};

uint64_t sys_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    unsigned long size = 0, resident = 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

void sys_on_mem_timer(tw_timer_t *t)
{
    worker_t *w = container_of(t, worker_t, mem_timer);
    server_t *srv = w->srv;
    uint64_t rss = sys_rss_bytes();
    int over = rss > srv->conf.memory_high_water;
    if (over != atomic_load(&srv->over_high_water)) {
        atomic_store(&srv->over_high_water, over);
        if (over)
            log_warn("memory %" PRIu64 " bytes is above memory_high_water (%" PRIu64
                     "): refusing new connections, dropping QoS 0 to slow subscribers",
                     rss, srv->conf.memory_high_water);
        else
            log_info("memory %" PRIu64 " bytes is back under memory_high_water", rss);
    }
    tw_add(&w->tw, t, w->now + 1000u);
}
