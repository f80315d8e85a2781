/* api_metrics.c -- the broker's figures: sums for /api/v1/stats and the
 * Prometheus text exposition of /metrics (format 0.0.4).
 *
 * Everything here is read without stopping anyone: per-worker counters
 * have one writer each and are loaded atomically, the gauges of sessions,
 * inflight and queued messages are refreshed by each worker every second,
 * the trie count is read under the trie's read lock (as $SYS does), the
 * store's figures come from store_stats().  Histograms are kept as
 * per-bucket counts (util.h an_hist_t) and made cumulative here, as
 * Prometheus wants.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "api_int.h"
#include "auth_chain.h"
#include "auth_passwd.h"
#include "module.h"
#include "reload.h"
#include "auth_chain.h"
#include "retain.h"
#include "router.h"
#include "store.h"
#include "sys.h"

static const char *const packet_names[16] = {"reserved",  "connect",  "connack",     "publish",
                                             "puback",    "pubrec",   "pubrel",      "pubcomp",
                                             "subscribe", "suback",   "unsubscribe", "unsuback",
                                             "pingreq",   "pingresp", "disconnect",  "auth"};

const char *api_packet_name(int type)
{
    return packet_names[type & 15];
}

void api_totals(server_t *srv, api_totals_t *t)
{
    memset(t, 0, sizeof(*t));
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        worker_stats_t *st = &srv->workers[i].stats;
        t->connected += STAT_GET(st->clients_connected);
        t->conn_exts += STAT_GET(st->conn_exts);
        t->connections_total += STAT_GET(st->connections_total);
        t->refused_limit += STAT_GET(st->refused_limit);
        t->refused_rate += STAT_GET(st->refused_rate);
        t->refused_memory += STAT_GET(st->refused_memory);
        t->refused_door += STAT_GET(st->refused_door);
        t->refused_fd_limit += STAT_GET(st->refused_fd_limit);
        t->msgs_received += STAT_GET(st->msgs_received);
        t->msgs_sent += STAT_GET(st->msgs_sent);
        t->msgs_dropped += STAT_GET(st->msgs_dropped);
        t->dropped_queue_full += STAT_GET(st->dropped_queue_full);
        t->bytes_received += STAT_GET(st->bytes_received);
        t->bytes_sent += STAT_GET(st->bytes_sent);
        for (int q = 0; q < 3; q++) {
            t->msgs_in_qos[q] += STAT_GET(st->msgs_in_qos[q]);
            t->msgs_out_qos[q] += STAT_GET(st->msgs_out_qos[q]);
        }
        for (int p = 0; p < STAT_PKT_TYPES; p++) {
            t->pkts_in[p] += STAT_GET(st->pkts_in[p]);
            t->pkts_out[p] += STAT_GET(st->pkts_out[p]);
        }
        t->sessions += STAT_GET(st->sessions);
        t->inflight += STAT_GET(st->inflight);
        t->queued += STAT_GET(st->queued);
        t->throttled += STAT_GET(st->throttled);
        t->backpressure_pauses += STAT_GET(st->backpressure_pauses);
        t->slow_disconnects += STAT_GET(st->slow_disconnects);
        t->route_holds += STAT_GET(st->route_holds);
        t->route_hold_timeouts += STAT_GET(st->route_hold_timeouts);
        t->congested += STAT_GET(st->congested);
        t->migrations += STAT_GET(st->migrations);
        t->migrate_handed += STAT_GET(st->migrate_handed);
        t->consol_changes += STAT_GET(st->consol_changes);
        t->fence_held += STAT_GET(st->fence_held);
        t->fence_handed += STAT_GET(st->fence_handed);
        t->auth_success += STAT_GET(st->auth_success);
        t->auth_failure += STAT_GET(st->auth_failure);
        t->auth_banned += STAT_GET(st->auth_banned);
        t->acl_denied += STAT_GET(st->acl_denied);
        t->takeovers_other_user += STAT_GET(st->takeovers_other_user);
    }
    pthread_rwlock_rdlock(&srv->trie_lock);
    t->subscriptions =
        trie_count(srv->trie) + router_node_exact_count(srv); /* + exact remote routes */
    pthread_rwlock_unlock(&srv->trie_lock);
    t->retained = retain_count(srv->retain);
}

/* ---- a growing text buffer ------------------------------------------------ */

typedef struct {
    char *p;
    size_t len, cap;
} sb_t;

static void sb_vprintf(sb_t *b, const char *fmt, va_list ap0)
{
    for (;;) {
        va_list ap;
        va_copy(ap, ap0);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (n > 0 ? (size_t)n : 0);
        b->p = an_realloc(b->p, b->cap);
    }
}

static void sb_printf(sb_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sb_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(b, fmt, ap);
    va_end(ap);
}

/* A label value as the text format wants it: \\, \" and \n escaped. */
static void label_escape(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; *in && n + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[n++] = '\\';
            out[n++] = *in;
        } else if (*in == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *in;
        }
    }
    out[n] = '\0';
}

static void family(sb_t *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(sb_t *b, const char *name, const char *type, const char *help, uint64_t v)
{
    family(b, name, type, help);
    sb_printf(b, "%s %" PRIu64 "\n", name, v);
}

/* ---- modules' families (module.h) ---- */

struct module_metrics_s {
    sb_t *b;
};

void module_metrics_family(module_metrics_t *mm, const char *name, const char *type,
                           const char *help)
{
    family(mm->b, name, type, help);
}

void module_metrics_printf(module_metrics_t *mm, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sb_vprintf(mm->b, fmt, ap);
    va_end(ap);
}

void module_metrics_counters(module_metrics_t *mm, const void *state, const module_counter_t *c,
                             size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const _Atomic uint64_t *v = (const _Atomic uint64_t *)((const char *)state + c[i].off);
        one(mm->b, c[i].name, "counter", c[i].help, atomic_load_explicit(v, memory_order_relaxed));
    }
}

/* A histogram from per-bucket counts over an_hist_bounds_us, in seconds. */
static void histogram(sb_t *b, const char *name, const char *labels, const uint64_t *bucket,
                      uint64_t sum_us)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < AN_HIST_N; i++) {
        cum += bucket[i];
        if (i < AN_HIST_N - 1)
            sb_printf(b, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels, sep,
                      an_hist_bounds_us[i] / 1e6, cum);
        else
            sb_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    sb_printf(b, "%s_sum%s%s%s %.6f\n", name, open, labels, close, sum_us / 1e6);
    sb_printf(b, "%s_count%s%s%s %" PRIu64 "\n", name, open, labels, close, cum);
}

/* Open descriptors of the process (entries of /proc/self/fd, less the
 * one the listing itself holds); 0 when it cannot be read. */
static uint64_t open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    uint64_t n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n ? n - 1 : 0;
}

/* The standard process_* family (Prometheus client conventions), so the
 * usual dashboards and alerts (fds near the limit, CPU, memory) work. */
static void process_metrics(sb_t *b, const server_t *srv)
{
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
              ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    family(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    sb_printf(b, "process_cpu_seconds_total %.3f\n", cpu);
    one(b, "process_resident_memory_bytes", "gauge", "Resident memory size.", sys_rss_bytes());
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld", &pages) != 1)
            pages = 0;
        fclose(f);
    }
    one(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size.",
        (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE));
    one(b, "process_open_fds", "gauge", "Open file descriptors.", open_fds());
    struct rlimit rl;
    uint64_t max = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0;
    one(b, "process_max_fds", "gauge", "Limit of open file descriptors (RLIMIT_NOFILE).", max);
    one(b, "process_start_time_seconds", "gauge", "Start time, seconds since the Unix epoch.",
        (uint64_t)srv->started_wall);
}

static const char *const transports[] = {"tcp", "tls", "ws", "wss"};

/* A counter family with one sample per listener: the sum over the workers
 * of the per-listener array at `off` in worker_stats_t. */
static void listener_counter(sb_t *b, const server_t *srv, const char *fam, const char *help,
                             size_t off)
{
    family(b, fam, "counter", help);
    for (uint32_t i = 0; i < srv->nlisteners; i++) {
        char name[2 * sizeof(srv->conf.listeners[i].name)];
        label_escape(srv->conf.listeners[i].name, name, sizeof(name));
        uint64_t n = 0;
        for (uint32_t k = 0; k < srv->nworkers; k++) {
            const an_counter_t *v =
                (const an_counter_t *)((const char *)&srv->workers[k].stats + off);
            n += STAT_GET(v[i]);
        }
        sb_printf(b, "%s{listener=\"%s\",transport=\"%s\"} %" PRIu64 "\n", fam, name,
                  transports[srv->conf.listeners[i].transport & 3], n);
    }
}

/* The auth backends (auth_stats.h), the ACL by action, the bans. */
static void auth_metrics(sb_t *b, server_t *srv)
{
    static const char *const answers[3] = {"allow", "deny", "pass"};
    static const char *const actions[3] = {"publish", "subscribe", "read"};
    uint64_t n[AUTH_KINDS][3] = {{0}}, bk[AUTH_KINDS][AN_HIST_N] = {{0}}, sum[AUTH_KINDS] = {0};
    uint64_t acl[3] = {0}, bans = 0;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        const worker_stats_t *st = &srv->workers[i].stats;
        for (int k = 0; k < AUTH_KINDS; k++) {
            for (int a = 0; a < 3; a++)
                n[k][a] += STAT_GET(st->auth.answers[k][a]);
            for (int h = 0; h < AN_HIST_N; h++)
                bk[k][h] += STAT_GET(st->auth.latency[k].bucket[h]);
            sum[k] += STAT_GET(st->auth.latency[k].sum_us);
        }
        for (int a = 0; a < 3; a++)
            acl[a] += STAT_GET(st->acl_denied_by[a]);
        bans += STAT_GET(st->bans);
    }
    /* only the kinds in the chain (or that answered before a reload) */
    int used[AUTH_KINDS] = {0};
    for (int k = 0; k < AUTH_KINDS; k++)
        used[k] = n[k][0] + n[k][1] + n[k][2] > 0 ||
                  (srv->auth && auth_chain_backend(srv->auth, auth_kind_name((unsigned)k)));
    family(b, "antenna_auth_backend_answers_total", "counter",
           "Answers of each authentication backend to CONNECTs (pass: not its client, the next "
           "backend asked).");
    for (int k = 0; k < AUTH_KINDS; k++)
        for (int a = 0; used[k] && a < 3; a++)
            sb_printf(
                b, "antenna_auth_backend_answers_total{backend=\"%s\",answer=\"%s\"} %" PRIu64 "\n",
                auth_kind_name((unsigned)k), answers[a], n[k][a]);
    family(b, "antenna_auth_backend_duration_seconds", "histogram",
           "Time an authentication backend took to answer a CONNECT (asynchronous ones: until "
           "their answer arrived).");
    for (int k = 0; k < AUTH_KINDS; k++) {
        if (!used[k])
            continue;
        char labels[48];
        snprintf(labels, sizeof(labels), "backend=\"%s\"", auth_kind_name((unsigned)k));
        histogram(b, "antenna_auth_backend_duration_seconds", labels, bk[k], sum[k]);
    }
    family(b, "antenna_acl_denied_total", "counter",
           "Publishes (wills too), subscriptions and deliveries (read: a message not "
           "delivered) refused by the ACL, by action.");
    for (int a = 0; a < 3; a++)
        sb_printf(b, "antenna_acl_denied_total{action=\"%s\"} %" PRIu64 "\n", actions[a], acl[a]);
    one(b, "antenna_bans_total", "counter",
        "Bans started by auth.ban: addresses banned and user names locked.", bans);
    uint32_t addrs = 0, users = 0;
    if (srv->auth)
        auth_ban_active(auth_chain_ban(srv->auth), an_now_ms(), &addrs, &users);
    family(b, "antenna_bans_active", "gauge", "Bans in force now (auth.ban), by kind.");
    sb_printf(b, "antenna_bans_active{kind=\"address\"} %u\n", addrs);
    sb_printf(b, "antenna_bans_active{kind=\"user\"} %u\n", users);
}

char *api_metrics_text(server_t *srv, size_t *len)
{
    sb_t b = {an_malloc(16384), 0, 16384};
    api_totals_t t;
    api_totals(srv, &t);

    one(&b, "antenna_uptime_seconds", "gauge", "Seconds since the broker started.",
        (an_now_ms() - srv->started_ms) / 1000u);
    family(&b, "antenna_build_info", "gauge", "The running build (always 1).");
    sb_printf(&b, "antenna_build_info{version=\"%s\"} 1\n", ANTENNA_VERSION);
    one(&b, "antenna_start_time_seconds", "gauge", "Start time, seconds since the Unix epoch.",
        (uint64_t)srv->started_wall);
    process_metrics(&b, srv);
    one(&b, "antenna_connections_active", "gauge", "Clients connected now (CONNACK sent).",
        t.connected);
    one(&b, "antenna_connection_extensions", "gauge",
        "Connections holding their rarely needed state now (a will, aliases, a rate-limit window, "
        "an authentication state, a TLS stack: conn_ext_t, 168 bytes each).",
        t.conn_exts);
    one(&b, "antenna_draining", "gauge", "1 while the broker drains (POST /api/v1/drain).",
        (uint64_t)reload_draining(srv));
    one(&b, "antenna_drain_clients_left", "gauge",
        "Connections still open (counted down by a drain).",
        (uint64_t)atomic_load(&srv->total_conns));
    one(&b, "antenna_connections_total", "counter", "Client connections accepted (CONNACK sent).",
        t.connections_total);
    family(&b, "antenna_connections_refused_total", "counter",
           "Connections refused at accept, by reason.");
    sb_printf(&b, "antenna_connections_refused_total{reason=\"max_connections\"} %" PRIu64 "\n",
              t.refused_limit);
    sb_printf(&b, "antenna_connections_refused_total{reason=\"rate\"} %" PRIu64 "\n",
              t.refused_rate);
    sb_printf(&b, "antenna_connections_refused_total{reason=\"door_closed\"} %" PRIu64 "\n",
              t.refused_door);
    sb_printf(&b, "antenna_connections_refused_total{reason=\"memory\"} %" PRIu64 "\n",
              t.refused_memory);
    sb_printf(&b, "antenna_connections_refused_total{reason=\"fd_limit\"} %" PRIu64 "\n",
              t.refused_fd_limit);

    family(&b, "antenna_listener_connections", "gauge", "Open connections per listener.");
    for (uint32_t i = 0; i < srv->nlisteners; i++) {
        char name[2 * sizeof(srv->conf.listeners[i].name)];
        label_escape(srv->conf.listeners[i].name, name, sizeof(name));
        sb_printf(&b, "antenna_listener_connections{listener=\"%s\",transport=\"%s\"} %u\n", name,
                  transports[srv->conf.listeners[i].transport & 3],
                  (unsigned)atomic_load(&srv->listen_conns[i]));
    }

    listener_counter(&b, srv, "antenna_listener_accepted_total",
                     "Connections accepted per listener (before the handshake and CONNECT).",
                     offsetof(worker_stats_t, accepted));
    listener_counter(&b, srv, "antenna_handshake_failures_total",
                     "Transport handshakes (TLS, the WebSocket upgrade) that failed or timed "
                     "out, per listener.",
                     offsetof(worker_stats_t, handshake_failed));

    family(&b, "antenna_packets_received_total", "counter", "MQTT packets read, by type.");
    for (int p = 1; p < STAT_PKT_TYPES; p++)
        sb_printf(&b, "antenna_packets_received_total{type=\"%s\"} %" PRIu64 "\n", packet_names[p],
                  t.pkts_in[p]);
    family(&b, "antenna_packets_sent_total", "counter", "MQTT packets sent, by type.");
    for (int p = 1; p < STAT_PKT_TYPES; p++)
        sb_printf(&b, "antenna_packets_sent_total{type=\"%s\"} %" PRIu64 "\n", packet_names[p],
                  t.pkts_out[p]);
    one(&b, "antenna_bytes_received_total", "counter", "Bytes read from clients.",
        t.bytes_received);
    one(&b, "antenna_bytes_sent_total", "counter", "Bytes written to clients.", t.bytes_sent);
    family(&b, "antenna_messages_received_total", "counter",
           "PUBLISH packets from clients, by QoS.");
    for (int q = 0; q < 3; q++)
        sb_printf(&b, "antenna_messages_received_total{qos=\"%d\"} %" PRIu64 "\n", q,
                  t.msgs_in_qos[q]);
    family(&b, "antenna_messages_sent_total", "counter", "PUBLISH packets to clients, by QoS.");
    for (int q = 0; q < 3; q++)
        sb_printf(&b, "antenna_messages_sent_total{qos=\"%d\"} %" PRIu64 "\n", q,
                  t.msgs_out_qos[q]);
    family(&b, "antenna_messages_dropped_total", "counter", "Messages dropped, by reason.");
    sb_printf(&b, "antenna_messages_dropped_total{reason=\"queue_full\"} %" PRIu64 "\n",
              t.dropped_queue_full);
    sb_printf(&b, "antenna_messages_dropped_total{reason=\"other\"} %" PRIu64 "\n",
              t.msgs_dropped > t.dropped_queue_full ? t.msgs_dropped - t.dropped_queue_full : 0);
    one(&b, "antenna_retained_messages", "gauge", "Retained messages stored.", t.retained);
    one(&b, "antenna_sessions", "gauge",
        "Sessions (connected and offline), refreshed every second.", t.sessions);
    one(&b, "antenna_subscriptions", "gauge", "Subscriptions in the topic trie.", t.subscriptions);
    one(&b, "antenna_inflight_messages", "gauge",
        "Outgoing QoS 1/2 messages awaiting acknowledgement, refreshed every second.", t.inflight);
    one(&b, "antenna_queued_messages", "gauge",
        "Messages queued behind the inflight window or offline, refreshed every second.", t.queued);
    one(&b, "antenna_auth_success_total", "counter", "CONNECTs accepted by authentication.",
        t.auth_success);
    one(&b, "antenna_auth_failure_total", "counter", "CONNECTs refused by authentication.",
        t.auth_failure);
    family(&b, "antenna_auth_attempts_total", "counter",
           "CONNECTs judged by authentication, by result (banned: refused for a ban of "
           "the address or a lock of the user name, without a check).");
    sb_printf(&b, "antenna_auth_attempts_total{result=\"success\"} %" PRIu64 "\n", t.auth_success);
    sb_printf(&b, "antenna_auth_attempts_total{result=\"failure\"} %" PRIu64 "\n", t.auth_failure);
    sb_printf(&b, "antenna_auth_attempts_total{result=\"banned\"} %" PRIu64 "\n", t.auth_banned);
    auth_metrics(&b, srv);
    one(&b, "antenna_takeovers_other_user_total", "counter",
        "CONNECTs that took over or resumed the session of another user.", t.takeovers_other_user);
    one(&b, "antenna_throttled_total", "counter", "Clients paused by a rate limit.", t.throttled);
    one(&b, "antenna_backpressure_pauses_total", "counter",
        "Publishers paused for a tick: a subscriber's queue over limits.publisher_backpressure.",
        t.backpressure_pauses);
    one(&b, "antenna_slow_disconnects_total", "counter",
        "Subscribers closed by slow_subscriber_timeout.", t.slow_disconnects);
    one(&b, "antenna_route_barrier_holds_total", "counter",
        "SUBACKs held until every node has the subscription's route (cluster).", t.route_holds);
    one(&b, "antenna_route_barrier_timeouts_total", "counter",
        "Of those, SUBACKs let go by the barrier's bound (2 s), a node not answering in time.",
        t.route_hold_timeouts);
    one(&b, "antenna_worker_congested_total", "counter",
        "Loop turns that found another worker's inbox over its bound.", t.congested);
    one(&b, "antenna_worker_migrations_total", "counter",
        "Connections moved to the worker their deliveries go to (workers_migrate).", t.migrations);
    one(&b, "antenna_worker_migrate_handed_total", "counter",
        "API jobs and cluster take-overs handed on to the worker a session had just moved to.",
        t.migrate_handed);
    one(&b, "antenna_worker_consolidations_total", "counter",
        "Changes between all sessions on worker 0 (light load) and spread by hash "
        "(workers_consolidate).",
        t.consol_changes);
    one(&b, "antenna_worker_consolidated", "gauge",
        "1 while the load is light enough for worker 0 alone (workers_consolidate).",
        atomic_load_explicit(&srv->consolidated, memory_order_relaxed));
    one(&b, "antenna_worker_fence_held_total", "counter",
        "Deliveries a moved subscriber's new worker held until no earlier one could follow.",
        t.fence_held);
    one(&b, "antenna_worker_fence_handed_total", "counter",
        "Deliveries matched before a subscriber moved, handed on by its old worker.",
        t.fence_handed);
    uint64_t rings = 0, skipped = 0;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        rings += atomic_load_explicit(&srv->workers[i].inbox.rings, memory_order_relaxed);
        skipped += atomic_load_explicit(&srv->workers[i].inbox.skipped, memory_order_relaxed);
    }
    one(&b, "antenna_worker_inbox_doorbells_total", "counter",
        "Sleeping workers woken for their inbox (eventfd writes).", rings);
    one(&b, "antenna_worker_inbox_doorbells_saved_total", "counter",
        "Inbox posts that rang no doorbell: the worker was running, or had just woken and "
        "its producer rang later only if still needed.",
        skipped);
    one(&b, "antenna_memory_rss_bytes", "gauge", "Resident memory of the process.",
        sys_rss_bytes());

    family(&b, "antenna_worker_loop_seconds", "histogram",
           "Duration of a worker loop turn (events, timers, end of turn).");
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        uint64_t bk[AN_HIST_N];
        for (int k = 0; k < AN_HIST_N; k++)
            bk[k] = STAT_GET(srv->workers[i].stats.loop_turn.bucket[k]);
        char labels[32];
        snprintf(labels, sizeof(labels), "worker=\"%u\"", i);
        histogram(&b, "antenna_worker_loop_seconds", labels, bk,
                  STAT_GET(srv->workers[i].stats.loop_turn.sum_us));
    }

    if (srv->store) {
        store_stats_t ss;
        store_stats(srv->store, &ss);
        /* which store holds the sessions: with the gauges above, the
         * sessions by store; with redis, a write below is one round trip */
        family(&b, "antenna_store_backend_info", "gauge",
               "The session store in use (label backend): 1.");
        sb_printf(&b, "antenna_store_backend_info{backend=\"%s\"} 1\n",
                  server_live(srv)->persistence_backend == CONF_STORE_REDIS ? "redis" : "rocksdb");
        one(&b, "antenna_store_batches_total", "counter", "Store batches committed.",
            ss.batches_committed);
        one(&b, "antenna_store_batches_failed_total", "counter", "Store batches failed.",
            ss.batches_failed);
        one(&b, "antenna_store_commits_total", "counter",
            "Backend writes (one per group of batches).", ss.commits);
        one(&b, "antenna_store_bytes_written_total", "counter", "Bytes written to the store.",
            ss.bytes_written);
        one(&b, "antenna_store_pending_batches", "gauge", "Batches waiting for the committer.",
            ss.pending_batches);
        family(&b, "antenna_store_write_seconds", "histogram",
               "Duration of a backend write (one group of batches; with redis one round trip).");
        histogram(&b, "antenna_store_write_seconds", "", ss.write_hist, ss.write_sum_us);
        family(&b, "antenna_store_fsync_seconds", "histogram",
               "Duration of an fsync (sync writes and WAL syncs).");
        histogram(&b, "antenna_store_fsync_seconds", "", ss.sync_hist, ss.sync_sum_us);
    }
    auth_backend_t *pwb = srv->auth ? auth_chain_backend(srv->auth, "password_file") : NULL;
    if (pwb) {
        auth_passwd_stats_t ps;
        auth_passwd_stats(pwb, &ps);
        family(&b, "antenna_auth_password_checks_total", "counter",
               "Password-file CONNECTs by how the password was checked (cache: a remembered "
               "success, memory or persistent; pbkdf2: hashed on a verification thread).");
        sb_printf(&b, "antenna_auth_password_checks_total{result=\"cache\"} %" PRIu64 "\n",
                  ps.cache_hits);
        sb_printf(&b, "antenna_auth_password_checks_total{result=\"pbkdf2\"} %" PRIu64 "\n",
                  ps.verified);
        one(&b, "antenna_auth_password_cache_loaded", "gauge",
            "Verifications loaded from the store at start (auth.password_cache: persistent).",
            ps.persistent_loaded);
    }
    module_metrics_t mm = {&b};
    for (uint32_t i = 0; i < srv->nmodules; i++) {
        module_inst_t *mi = &srv->modules[i];
        if (mi->inited && mi->m->metrics)
            mi->m->metrics(mi, &mm);
    }
    *len = b.len;
    return b.p;
}
