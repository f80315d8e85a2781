/* cluster.c -- the cluster module: configuration, the member table and the
 * link thread (cluster.h, cl_int.h; docs/cluster.md is the design).
 *
 * The module is off (no thread, no state, nothing registered) unless
 * cluster.node is set.  When on:
 *   init   (main thread)  the state, then cl_links_init: the link listener
 *                         is bound before the workers run, so its address
 *                         is known before this node registers anywhere;
 *   start  (main thread)  the link thread, the static members, then
 *                         cl_member_start (the etcd thread);
 *   stop   (main thread)  cl_member_stop (a clean leave), then the link
 *                         thread ends (cl_links_stop on it);
 *   free   (main thread)  cl_member_free (the etcd client and its thread
 *                         end), cl_links_free, the state.
 *
 * The link thread turns an ev loop with a timer wheel; other threads hand
 * it work with cl_post() (a locked list and an eventfd), which is how
 * membership changes (cl_member_seen / cl_member_gone) reach the member
 * table, which only the link thread touches.
 */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <jansson.h>

#include "cl_int.h"
#include "reload.h"
#include "log.h"
#include "net_tls.h"
#include "util.h"

/* ---- configuration ---- */

static void cl_conf_defaults(void *conf)
{
    cl_conf_t *c = conf;
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", "antenna");
    snprintf(c->etcd, sizeof(c->etcd), "%s", "http://127.0.0.1:2379");
    c->lease_ttl_ms = 10000;
    c->drain_handover_wait_ms = 60000;
    c->adopt = 1;
    c->adopt_wait_ms = 30000;
    c->route_bloom_above = 1000;
    c->route_bits = 1;
    c->revoke_refused = 1; /* docs/cluster.md "A dead node's process" */
    c->repl_timeout_ms = 5000;
    snprintf(c->listen, sizeof(c->listen), "%s", "127.0.0.1:0");
}

/* Letters, digits, '-', '_' and '.': a node or cluster name goes into etcd
 * keys, log lines and metric labels as it is. */
static int cl_name_ok(const char *s)
{
    if (s[0] == '\0')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

/* "host:port" (host may be "[v6]"), port 0..65535. */
static int cl_addr_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0')
        return 0;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    return *end == '\0' && port <= 65535;
}

static int cl_read_secret(conf_sec_t *s, cl_conf_t *c)
{
    FILE *f = fopen(c->secret_file, "r");
    if (f == NULL)
        return conf_sec_fail(s, "secret_file", "%s: %s", c->secret_file, strerror(errno));
    size_t n = fread(c->secret, 1, sizeof(c->secret) - 1, f);
    int toolong = n == sizeof(c->secret) - 1 && fgetc(f) != EOF;
    fclose(f);
    c->secret[n] = '\0';
    while (n > 0 && (c->secret[n - 1] == '\n' || c->secret[n - 1] == '\r'))
        c->secret[--n] = '\0';
    if (toolong)
        return conf_sec_fail(s, "secret_file", "%s: the secret is longer than %zu bytes",
                             c->secret_file, sizeof(c->secret) - 2);
    if (n == 0)
        return conf_sec_fail(s, "secret_file", "%s: the file is empty", c->secret_file);
    return 0;
}

/* cluster.tls: the three files set, readable and usable together (the
 * context is built once here, so `antenna check` sees what startup would). */
static int cl_tls_conf_check(conf_sec_t *s, cl_conf_t *c)
{
    static const char *const keys[] = {"tls_cert_file", "tls_key_file", "tls_ca_file"};
    const char *vals[] = {c->tls_cert_file, c->tls_key_file, c->tls_ca_file};
    for (int i = 0; i < 3; i++)
        if (vals[i][0] == '\0')
            return conf_sec_fail(s, keys[i], "required when cluster.tls is true");
    char err[512];
    const char *bad = NULL;
    struct ssl_ctx_st *ctx =
        tls_link_ctx_new(c->tls_cert_file, c->tls_key_file, c->tls_ca_file, &bad, err, sizeof(err));
    if (ctx == NULL) { /* "cluster: KEY FILE: why": the key is named already */
        const char *msg = err;
        size_t pl = strlen("cluster: "), kl = bad ? strlen(bad) : 0;
        if (bad && strncmp(err, "cluster: ", pl) == 0 && strncmp(err + pl, bad, kl) == 0 &&
            err[pl + kl] == ' ')
            msg = err + pl + kl + 1;
        return conf_sec_fail(s, bad ? bad : "tls", "%s", msg);
    }
    tls_ctx_free(ctx);
    if (strchr(c->tls_verify_name, '*') != NULL)
        return conf_sec_fail(s, "tls_verify_name", "\"%.60s\": a name, not a pattern",
                             c->tls_verify_name);
    return 0;
}

/* cluster.replication (persistence.session_store: replicated, cl_repl.c) */
static int cl_conf_repl(conf_sec_t *s, void *conf)
{
    cl_conf_t *c = conf;
    if (conf_sec_bool(s, "required", &c->repl_required) < 0 ||
        conf_sec_ms(s, "timeout", 100, 600000, &c->repl_timeout_ms) < 0)
        return -1;
    return 0;
}

static int cl_conf_load(conf_sec_t *s, void *conf)
{
    cl_conf_t *c = conf;
    if (conf_sec_str(s, "node", c->node, sizeof(c->node), 0) < 0 ||
        conf_sec_str(s, "name", c->name, sizeof(c->name), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_str(s, "etcd", c->etcd, sizeof(c->etcd), 0) < 0 ||
        conf_sec_ms(s, "lease_ttl", 2000, 3600000, &c->lease_ttl_ms) < 0 ||
        conf_sec_ms(s, "drain_handover_wait", 0, 3600000, &c->drain_handover_wait_ms) < 0 ||
        conf_sec_bool(s, "adopt", &c->adopt) < 0 ||
        conf_sec_ms(s, "adopt_wait", 1000, 3600000, &c->adopt_wait_ms) < 0 ||
        conf_sec_u32(s, "route_bloom_above", 0, UINT32_MAX, &c->route_bloom_above) < 0 ||
        conf_sec_bool(s, "route_bits", &c->route_bits) < 0 ||
        conf_sec_bool(s, "revoke_refused", &c->revoke_refused) < 0 ||
        conf_sec_map(s, "replication", cl_conf_repl, c) < 0 ||
        conf_sec_str(s, "listen", c->listen, sizeof(c->listen), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_str(s, "advertise", c->advertise, sizeof(c->advertise), 0) < 0 ||
        conf_sec_str(s, "secret", c->secret, sizeof(c->secret), 0) < 0 ||
        conf_sec_str(s, "secret_file", c->secret_file, sizeof(c->secret_file), 0) < 0 ||
        conf_sec_names(s, "static_members", &c->static_members[0][0], sizeof(c->static_members[0]),
                       CL_STATIC_MAX, &c->nstatic) < 0 ||
        conf_sec_bool(s, "tls", &c->tls) < 0 ||
        conf_sec_str(s, "tls_cert_file", c->tls_cert_file, sizeof(c->tls_cert_file), 0) < 0 ||
        conf_sec_str(s, "tls_key_file", c->tls_key_file, sizeof(c->tls_key_file), 0) < 0 ||
        conf_sec_str(s, "tls_ca_file", c->tls_ca_file, sizeof(c->tls_ca_file), 0) < 0 ||
        conf_sec_str(s, "tls_verify_name", c->tls_verify_name, sizeof(c->tls_verify_name), 0) < 0)
        return -1;
    if (c->tls && cl_tls_conf_check(s, c) < 0)
        return -1;
    if (c->node[0] != '\0' && !cl_name_ok(c->node))
        return conf_sec_fail(s, "node", "\"%.60s\": letters, digits, '-', '_' and '.' only",
                             c->node);
    if (!cl_name_ok(c->name))
        return conf_sec_fail(s, "name", "\"%.60s\": letters, digits, '-', '_' and '.' only",
                             c->name);
    if (!cl_addr_ok(c->listen))
        return conf_sec_fail(s, "listen", "\"%.100s\": expected host:port", c->listen);
    if (c->advertise[0] != '\0' && !cl_addr_ok(c->advertise))
        return conf_sec_fail(s, "advertise", "\"%.100s\": expected host:port", c->advertise);
    if (c->secret[0] != '\0' && c->secret_file[0] != '\0')
        return conf_sec_fail(s, "secret_file", "set secret or secret_file, not both");
    if (c->secret_file[0] != '\0' && cl_read_secret(s, c) < 0)
        return -1;
    for (uint32_t i = 0; i < c->nstatic; i++) {
        char *m = c->static_members[i];
        char *at = strchr(m, '@');
        if (at != NULL)
            *at = '\0';
        int ok = at != NULL && cl_name_ok(m) && cl_addr_ok(at + 1);
        if (at != NULL)
            *at = '@';
        if (!ok)
            return conf_sec_fail(s, "static_members", "\"%.100s\": expected name@host:port", m);
    }
    if (c->node[0] == '\0' && c->nstatic > 0)
        return conf_sec_fail(s, "node", "static members are set but this node has no name");
    return 0;
}

static void cl_conf_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    const cl_conf_t *c = conf;
    fn(ud, CONF_V_STR, "node", c->node, 0);
    fn(ud, CONF_V_STR, "name", c->name, 0);
    fn(ud, CONF_V_STR, "etcd", c->etcd, 0);
    fn(ud, CONF_V_UINT, "lease_ttl_ms", NULL, c->lease_ttl_ms);
    fn(ud, CONF_V_UINT, "drain_handover_wait_ms", NULL, c->drain_handover_wait_ms);
    fn(ud, CONF_V_BOOL, "adopt", NULL, c->adopt);
    fn(ud, CONF_V_UINT, "adopt_wait_ms", NULL, c->adopt_wait_ms);
    fn(ud, CONF_V_UINT, "route_bloom_above", NULL, c->route_bloom_above);
    fn(ud, CONF_V_BOOL, "route_bits", NULL, c->route_bits);
    fn(ud, CONF_V_BOOL, "revoke_refused", NULL, c->revoke_refused);
    fn(ud, CONF_V_SECTION, "replication", NULL, 0);
    fn(ud, CONF_V_BOOL, "required", NULL, c->repl_required);
    fn(ud, CONF_V_UINT, "timeout_ms", NULL, c->repl_timeout_ms);
    fn(ud, CONF_V_END, NULL, NULL, 0);
    fn(ud, CONF_V_STR, "listen", c->listen, 0);
    fn(ud, CONF_V_STR, "advertise", c->advertise, 0);
    fn(ud, CONF_V_STR, "secret", c->secret[0] ? "(set)" : "", 0);
    fn(ud, CONF_V_STR, "secret_file", c->secret_file, 0);
    fn(ud, CONF_V_LIST, "static_members", NULL, 0);
    for (uint32_t i = 0; i < c->nstatic; i++)
        fn(ud, CONF_V_STR, NULL, c->static_members[i], 0);
    fn(ud, CONF_V_END, NULL, NULL, 0);
    fn(ud, CONF_V_BOOL, "tls", NULL, c->tls);
    fn(ud, CONF_V_STR, "tls_cert_file", c->tls_cert_file, 0);
    fn(ud, CONF_V_STR, "tls_key_file", c->tls_key_file, 0);
    fn(ud, CONF_V_STR, "tls_ca_file", c->tls_ca_file, 0);
    fn(ud, CONF_V_STR, "tls_verify_name", c->tls_verify_name, 0);
}

/* ---- the link thread ---- */

int cl_post(cl_t *cl, void (*fn)(cl_t *cl, void *arg), void *arg)
{
    if (atomic_load(&cl->stopping))
        return -1;
    cl_task_t *t = an_calloc(1, sizeof(*t));
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&cl->mu);
    /* a list that was not empty has been woken for already, and the
     * thread takes it whole after reading the wake-up (cl_on_wake): one
     * write(2) per run of tasks, not per task (a storm of subscriptions
     * posts one per route change) */
    int wake = cl->tasks == NULL;
    *cl->tasks_tail = t;
    cl->tasks_tail = &t->next;
    pthread_mutex_unlock(&cl->mu);
    if (wake) {
        uint64_t one = 1;
        ssize_t n = write(cl->wake.fd, &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is full, the thread is woken anyway */
    }
    return 0;
}

static void cl_run_tasks(cl_t *cl)
{
    pthread_mutex_lock(&cl->mu);
    cl_task_t *t = cl->tasks;
    cl->tasks = NULL;
    cl->tasks_tail = &cl->tasks;
    pthread_mutex_unlock(&cl->mu);
    while (t != NULL) {
        cl_task_t *next = t->next;
        t->fn(cl, t->arg);
        free(t);
        t = next;
    }
}

static void cl_on_wake(ev_loop_t *loop, ev_watcher_t *w, uint32_t events)
{
    (void)loop;
    (void)events;
    cl_t *cl = (cl_t *)((char *)w - offsetof(cl_t, wake));
    uint64_t n;
    ssize_t r = read(w->fd, &n, sizeof(n));
    (void)r;
    cl_run_tasks(cl);
    cl_route_marks(cl);
}

static void *cl_thread_main(void *arg)
{
    cl_t *cl = arg;
    pthread_setname_np(pthread_self(), "an-cluster");
    cl->now = an_now_ms();
    tw_init(&cl->tw, cl->now);
    if (cl_links_start(cl) < 0) {
        log_error("cluster: the node links could not start; this node forwards nothing");
    }
    cl_repl_start(cl);
    cl_run_tasks(cl);
    while (!atomic_load(&cl->stopping)) {
        int64_t t = tw_next_timeout(&cl->tw);
        int timeout = t < 0 || t > 1000 ? 1000 : (int)t;
        if (ev_loop_run_once(&cl->loop, timeout) < 0 && errno != EINTR) {
            log_error("cluster: the link thread's poller failed: %s", strerror(errno));
            break;
        }
        cl->now = an_now_ms();
        tw_advance(&cl->tw, cl->now);
    }
    cl_owner_stop(cl);
    cl_move_stop(cl);
    cl_links_stop(cl);
    cl_run_tasks(cl); /* posted before the stop: run, so their memory is freed */
    return NULL;
}

/* ---- the member table ---- */

int cl_node_index(cl_t *cl, const char *name)
{
    int free_idx = -1;
    for (int i = 1; i < CL_MAX_NODES; i++) {
        if (cl->nodes[i].used && strcmp(cl->nodes[i].name, name) == 0)
            return i;
        if (!cl->nodes[i].used && free_idx < 0)
            free_idx = i;
    }
    if (free_idx < 0)
        return -1;
    cl_node_t *n = &cl->nodes[free_idx];
    memset(n, 0, sizeof(*n));
    snprintf(n->name, sizeof(n->name), "%s", name);
    n->used = 1;
    return free_idx;
}

typedef struct {
    char name[CL_NAME_MAX];
    char addr[CL_ADDR_MAX];
    int present;
} cl_member_msg_t;

static int cl_adopt_rank(cl_t *cl, const char *name);

static void cl_member_apply(cl_t *cl, void *arg)
{
    cl_member_msg_t *m = arg;
    if (strcmp(m->name, cl->conf->node) == 0)
        goto done;
    int idx = cl_node_index(cl, m->name);
    if (idx < 0) {
        log_limited(10000, AN_LOG_ERROR, "cluster: more than %d nodes: %s ignored",
                    CL_MAX_NODES - 1, m->name);
        goto done;
    }
    cl_node_t *n = &cl->nodes[idx];
    int changed = n->member != m->present || (m->present && strcmp(n->link_addr, m->addr) != 0);
    if (!changed)
        goto done;
    if (m->present)
        snprintf(n->link_addr, sizeof(n->link_addr), "%s", m->addr);
    if (n->member != m->present) {
        n->member = (uint8_t)m->present;
        n->since_ms = cl->now;
        if (m->present)
            atomic_fetch_add(&cl->members, 1);
        else
            atomic_fetch_sub(&cl->members, 1);
        log_info("cluster: node %s %s%s%s", n->name, m->present ? "joined (links at " : "left",
                 m->present ? n->link_addr : "", m->present ? ")" : "");
    }
    pthread_mutex_lock(&cl->snap_mu);
    cl->snap[idx] = *n;
    pthread_mutex_unlock(&cl->snap_mu);
    cl_links_member_changed(cl, idx);
    if (cl->adopt != NULL)
        cl_adopt_member(cl, n->name, m->present, m->present ? 0 : cl_adopt_rank(cl, n->name));
done:
    if (!m->present)
        cl_adopt_early(cl, -1); /* its watch (if any) holds CONNECTs back from here */
    free(m);
}

/* Rendezvous hashing (cl_int.h): node's weight for name; every node
 * computes the same order (an adopter's rank, a node's replica). */
uint64_t cl_rdv(const char *node, const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = node; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h ^= h >> 29; /* FNV-1a's low bits mix poorly: a final avalanche */
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static int cl_adopt_rank(cl_t *cl, const char *name)
{
    uint64_t mine = cl_rdv(cl->conf->node, name);
    int rank = 0;
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (cl->nodes[i].used && cl->nodes[i].member) {
            uint64_t h = cl_rdv(cl->nodes[i].name, name);
            rank += h > mine || (h == mine && strcmp(cl->nodes[i].name, cl->conf->node) < 0);
        }
    return rank;
}

static void cl_member_post(cl_t *cl, const char *name, const char *addr, int present)
{
    cl_member_msg_t *m = an_calloc(1, sizeof(*m));
    snprintf(m->name, sizeof(m->name), "%.*s", CL_NAME_MAX - 1, name);
    snprintf(m->addr, sizeof(m->addr), "%.*s", CL_ADDR_MAX - 1, addr ? addr : "");
    m->present = present;
    if (!present)
        cl_adopt_early(cl, 1); /* until cl_member_apply watched it */
    if (cl_post(cl, cl_member_apply, m) < 0) {
        if (!present)
            cl_adopt_early(cl, -1);
        free(m);
    }
}

/* Link thread: a store of a node that is not a member, found at start
 * (cl_adopt.c): watched as if this node had seen it go out. */
static void cl_unseen_apply(cl_t *cl, void *arg)
{
    char *name = arg;
    int known = strcmp(name, cl->conf->node) == 0;
    for (int i = 1; i < CL_MAX_NODES && !known; i++)
        known = cl->nodes[i].used && strcmp(cl->nodes[i].name, name) == 0;
    /* a node heard of (a member, or seen go out: watched then) is not */
    if (!known && cl->adopt != NULL && cl_node_index(cl, name) > 0) {
        log_info("cluster: node %s is not a member and its store is in Redis: watched for "
                 "sessions to adopt",
                 name);
        cl_adopt_member(cl, name, 0, cl_adopt_rank(cl, name));
    }
    free(name);
}

void cl_adopt_unseen(cl_t *cl, const char *name)
{
    size_t l = strlen(name);
    char *s = an_malloc(l + 1);
    memcpy(s, name, l + 1);
    if (cl_post(cl, cl_unseen_apply, s) < 0)
        free(s);
}

void cl_member_seen(cl_t *cl, const char *name, const char *link_addr)
{
    cl_member_post(cl, name, link_addr, 1);
}

void cl_member_gone(cl_t *cl, const char *name)
{
    cl_member_post(cl, name, NULL, 0);
}

/* ---- the management API ---- */

/* A peer's link as cl_link.c counts it (relaxed atomics; the cipher under
 * snap_mu, held by the caller). */
static json_t *cl_link_json(cl_link_stats_t *st)
{
    static const char *const states[] = {"down", "handshake", "up"};
    uint32_t state = CL_STAT_GET(st->state);
    uint64_t oldest = CL_STAT_GET(st->oldest), wall = an_wall_ms();
    json_int_t lag =
        CL_STAT_GET(st->queued) && oldest && wall > oldest ? (json_int_t)(wall - oldest) : 0;
    json_t *o = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:[I,I,I],s:I,s:I,s:I,s:I,s:I,s:I}", "state",
        states[state < 3 ? state : 0], "ups", (json_int_t)CL_STAT_GET(st->ups), "bytes_in",
        (json_int_t)CL_STAT_GET(st->bytes_in), "bytes_out", (json_int_t)CL_STAT_GET(st->bytes_out),
        "received", (json_int_t)CL_STAT_GET(st->received), "forwarded",
        (json_int_t)CL_STAT_GET(st->fwd[0]), (json_int_t)CL_STAT_GET(st->fwd[1]),
        (json_int_t)CL_STAT_GET(st->fwd[2]), "dropped", (json_int_t)CL_STAT_GET(st->dropped),
        "queued", (json_int_t)CL_STAT_GET(st->queued), "output_bytes",
        (json_int_t)CL_STAT_GET(st->out_bytes), "routes", (json_int_t)CL_STAT_GET(st->routes),
        "refused", (json_int_t)CL_STAT_GET(st->refused), "lag_ms", lag);
    json_object_set_new(o, "unmatched", json_integer((json_int_t)CL_STAT_GET(st->unmatched)));
    json_object_set_new(o, "route_bloom_bytes",
                        json_integer((json_int_t)CL_STAT_GET(st->bloom_bytes)));
    json_object_set_new(o, "send_calls", json_integer((json_int_t)CL_STAT_GET(st->sends)));
    json_object_set_new(o, "recv_calls", json_integer((json_int_t)CL_STAT_GET(st->recvs)));
    json_object_set_new(o, "buffer_bytes", json_integer((json_int_t)CL_STAT_GET(st->buf_bytes)));
    json_object_set_new(o, "buffer_peak", json_integer((json_int_t)CL_STAT_GET(st->buf_peak)));
    json_object_set_new(o, "route_resyncs", json_integer((json_int_t)CL_STAT_GET(st->resyncs)));
    json_object_set_new(o, "route_bits", json_boolean(CL_STAT_GET(st->bits_in) != 0));
    int tls = CL_STAT_GET(st->tls) != 0;
    json_object_set_new(o, "tls", json_boolean(tls));
    if (tls)
        json_object_set_new(o, "cipher", json_string(st->cipher));
    return o;
}

json_t *cl_nodes_json(cl_t *cl)
{
    json_t *members = json_array();
    json_array_append_new(members, json_pack("{s:s,s:s,s:b,s:b,s:I}", "node", cl->conf->node,
                                             "link", cl->link_addr, "self", 1, "member", 1,
                                             "routes", (json_int_t)CL_STAT_GET(cl->local_routes)));
    uint64_t now = an_now_ms();
    pthread_mutex_lock(&cl->snap_mu);
    for (int i = 1; i < CL_MAX_NODES; i++) {
        const cl_node_t *n = &cl->snap[i];
        if (!n->used)
            continue;
        json_t *o = json_pack(
            "{s:s,s:s,s:b,s:b,s:I}", "node", n->name, "link", n->link_addr, "self", 0, "member",
            n->member, n->member ? "member_for_ms" : "out_for_ms", (json_int_t)(now - n->since_ms));
        json_object_set_new(o, "link_state", cl_link_json(&cl->lstats[i]));
        json_array_append_new(members, o);
    }
    pthread_mutex_unlock(&cl->snap_mu);
    json_t *root = json_pack(
        "{s:b,s:s,s:s,s:s,s:i,s:b,s:b,s:I,s:o}", "clustered", 1, "node", cl->conf->node, "cluster",
        cl->conf->name, "link", cl->link_addr, "members", (int)atomic_load(&cl->members),
        "lease_ok", atomic_load(&cl->lease_ok), "tls", cl->conf->tls != 0, "refused_unnamed",
        (json_int_t)CL_STAT_GET(cl->refused_unnamed), "nodes", members);
    json_t *repl = cl_repl_json(cl);
    if (repl != NULL)
        json_object_set_new(root, "replication", repl);
    return root;
}

static int cl_api_nodes(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    (void)req;
    cl_t *cl = mi->state;
    if (cl == NULL) { /* cluster.node is not set: a broker on its own */
        *out = json_pack("{s:b,s:[]}", "clustered", 0, "nodes");
        return 200;
    }
    *out = cl_nodes_json(cl);
    return 200;
}

static const module_api_route_t cl_api_routes[] = {
    {"nodes", 0, MODULE_API_GET, cl_api_nodes},
    {NULL, 0, 0, NULL},
};

static void cl_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    cl_t *cl = mi->state;
    if (cl == NULL)
        return;
    module_metrics_family(mm, "antenna_cluster_members", "gauge",
                          "Members of the cluster this node sees, itself included.");
    module_metrics_printf(mm, "antenna_cluster_members %u\n", atomic_load(&cl->members));
    module_metrics_family(mm, "antenna_cluster_lease_ok", "gauge",
                          "1 while this node's membership lease is alive (always 1 without etcd).");
    module_metrics_printf(mm, "antenna_cluster_lease_ok %d\n", atomic_load(&cl->lease_ok));
    module_metrics_family(mm, "antenna_cluster_route_mark_rounds_total", "counter",
                          "Rounds of this node's route changes written to its links, each "
                          "with a ROUTE_MARK on every link up.");
    module_metrics_printf(mm, "antenna_cluster_route_mark_rounds_total %" PRIu64 "\n",
                          (uint64_t)atomic_load(&cl->route_marks));
    module_metrics_family(mm, "antenna_cluster_route_trims_total", "counter",
                          "malloc_trim calls of the link thread once a storm of route "
                          "changes was over.");
    module_metrics_printf(mm, "antenna_cluster_route_trims_total %" PRIu64 "\n",
                          (uint64_t)atomic_load(&cl->route_trims));
    cl_member_metrics(cl, mm);
    cl_owner_metrics(cl, mm);
    cl_adopt_metrics(cl, mm);
    cl_move_metrics(cl, mm);
    cl_repl_metrics(cl, mm);
    /* per peer: the names under snap_mu, the figures from the link thread's atomics */
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"antenna_cluster_link_up", "gauge", "1 while the link to the peer node is up."},
        {"antenna_cluster_forwarded_total", "counter",
         "Messages forwarded to the peer node, by QoS."},
        {"antenna_cluster_received_total", "counter", "Messages received from the peer node."},
        {"antenna_cluster_dropped_total", "counter",
         "Messages for the peer node dropped (link down or its output full for QoS 0; too "
         "many unacknowledged for QoS 1/2)."},
        {"antenna_cluster_routes", "gauge", "Topic filters the peer node announced."},
        {"antenna_cluster_link_refused_total", "counter",
         "Links with the peer node refused in their handshake (TLS, secret, name)."},
        {"antenna_cluster_link_tls", "gauge",
         "1 when the peer node's link (last up) runs over TLS."},
        {"antenna_cluster_forward_unmatched_total", "counter",
         "Messages from the peer node that matched no subscriber here (a false positive of "
         "its exact-route Bloom filter, a hash collision, a subscriber gone meanwhile)."},
        {"antenna_cluster_route_bloom_bytes", "gauge",
         "Bytes of the Bloom filter holding the peer node's exact routes (0: kept exactly)."},
        {"antenna_cluster_route_resyncs_total", "counter",
         "Full route syncs asked of the peer node to rebuild its Bloom filter."},
    };
    char names[CL_MAX_NODES][CL_NAME_MAX];
    int idx[CL_MAX_NODES], n = 0;
    pthread_mutex_lock(&cl->snap_mu);
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (cl->snap[i].used) {
            memcpy(names[n], cl->snap[i].name, CL_NAME_MAX);
            idx[n++] = i;
        }
    pthread_mutex_unlock(&cl->snap_mu);
    for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
        module_metrics_family(mm, fam[f].name, fam[f].type, fam[f].help);
        for (int j = 0; j < n; j++) {
            cl_link_stats_t *st = &cl->lstats[idx[j]];
            if (f == 1) {
                for (int q = 0; q < 3; q++)
                    module_metrics_printf(mm, "%s{peer=\"%s\",qos=\"%d\"} %" PRIu64 "\n",
                                          fam[f].name, names[j], q, CL_STAT_GET(st->fwd[q]));
                continue;
            }
            uint64_t v = f == 0   ? CL_STAT_GET(st->state) == CL_LINK_UP
                         : f == 2 ? CL_STAT_GET(st->received)
                         : f == 3 ? CL_STAT_GET(st->dropped)
                         : f == 4 ? CL_STAT_GET(st->routes)
                         : f == 5 ? CL_STAT_GET(st->refused)
                         : f == 6 ? CL_STAT_GET(st->tls)
                         : f == 7 ? CL_STAT_GET(st->unmatched)
                         : f == 8 ? CL_STAT_GET(st->bloom_bytes)
                                  : CL_STAT_GET(st->resyncs);
            module_metrics_printf(mm, "%s{peer=\"%s\"} %" PRIu64 "\n", fam[f].name, names[j], v);
        }
    }
    module_metrics_family(mm, "antenna_cluster_link_refused_unnamed_total", "counter",
                          "Accepted links refused before the peer said which node it is (a TLS "
                          "handshake that failed, a plain peer at a TLS node).");
    module_metrics_printf(mm, "antenna_cluster_link_refused_unnamed_total %" PRIu64 "\n",
                          CL_STAT_GET(cl->refused_unnamed));
}

static const char *cl_unready(module_inst_t *mi)
{
    cl_t *cl = mi->state;
    if (cl != NULL && !atomic_load(&cl->lease_ok))
        return "cluster: lease lost";
    return NULL;
}

/* ---- the module ---- */

static int cl_init(module_inst_t *mi)
{
    const cl_conf_t *c = mi->conf;
    if (c->node[0] == '\0')
        return 0;
    cl_t *cl = an_calloc(1, sizeof(*cl));
    snprintf(mi->srv->node_name, sizeof(mi->srv->node_name), "%s", c->node);
    cl->srv = mi->srv;
    cl->srv->msg_ids = 1; /* what is published here carries its publish id (msg.h) */
    atomic_store(&cl->srv->msg_ids_store, 1); /* alone so far (cl_link.c ids_gate) */
    cl->conf = c;
    cl->mod_index = mi->index;
    cl->tasks_tail = &cl->tasks;
    cl->loop.epfd = -1;
    cl->wake.fd = -1;
    atomic_init(&cl->members, 1);
    atomic_init(&cl->lease_ok, c->etcd[0] == '\0');
    pthread_mutex_init(&cl->mu, NULL);
    pthread_mutex_init(&cl->snap_mu, NULL);
    mi->state = cl;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0 || ev_loop_init(&cl->loop, 64, NULL) < 0) {
        log_error("cluster: cannot create the link thread's loop: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    ev_watcher_init(&cl->wake, fd, cl_on_wake);
    if (ev_watch_start(&cl->loop, &cl->wake, EV_READ) < 0) {
        log_error("cluster: cannot watch the link thread's eventfd: %s", strerror(errno));
        return -1;
    }
    if (cl_links_init(cl) < 0 || cl_owner_init(cl) < 0 || cl_repl_init(cl) < 0 ||
        cl_adopt_init(cl) < 0 || cl_move_init(cl) < 0)
        return -1;
    return 0;
}

/* The drain's hook (reload.h): with the client-id registry, a session
 * left here is taken by the node its client reconnects to (cl_owner.c):
 * the drain waits for the persistent sessions to go before the node
 * stops, and for the tombstones those takes left (cl_move.c): what they
 * queued goes to the new owner once it asks, and each ends within
 * MOVE_KEEP_MS (asked: its linger; a clean start: at once). */
static uint64_t cl_drain_pending(server_t *srv, void *user)
{
    return atomic_load(&srv->persistent_sessions) + cl_move_tombstones(user);
}

static int cl_start(module_inst_t *mi)
{
    cl_t *cl = mi->state;
    if (cl == NULL)
        return 0;
    if (cl->conf->etcd[0] != '\0' && mi->srv->reload != NULL)
        reload_drain_hook_set(mi->srv,
                              &(reload_drain_hook_t){.pending = cl_drain_pending,
                                                     .wait_ms = cl->conf->drain_handover_wait_ms,
                                                     .user = cl});
    for (uint32_t i = 0; i < cl->conf->nstatic; i++) {
        char m[CL_NAME_MAX + CL_ADDR_MAX];
        snprintf(m, sizeof(m), "%s", cl->conf->static_members[i]);
        char *at = strchr(m, '@'); /* checked by cl_conf_load */
        *at = '\0';
        cl_member_seen(cl, m, at + 1);
    }
    int rc = pthread_create(&cl->thread, NULL, cl_thread_main, cl);
    if (rc != 0) {
        log_error("cluster: cannot start the link thread: %s", strerror(rc));
        return -1;
    }
    cl->thread_started = 1;
    if (cl_adopt_start(cl) < 0)
        return -1;
    log_info("cluster: node %s of cluster %s, links at %s%s%s", cl->conf->node, cl->conf->name,
             cl->link_addr, cl->conf->etcd[0] ? ", etcd " : ", static members only",
             cl->conf->etcd);
    return cl_member_start(cl);
}

static void cl_stop(module_inst_t *mi)
{
    cl_t *cl = mi->state;
    if (cl == NULL)
        return;
    cl_adopt_stop(cl);
    cl_repl_stop(cl); /* before the lease goes: "stopped" in etcd */
    cl_member_stop(cl);
    atomic_store(&cl->stopping, 1);
    if (cl->thread_started) {
        uint64_t one = 1;
        ssize_t n = write(cl->wake.fd, &one, sizeof(one));
        (void)n;
        pthread_join(cl->thread, NULL);
        cl->thread_started = 0;
    }
}

static void cl_turn_end(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)ctx;
    cl_links_turn_end(mi->state, w);
}

static void cl_free(module_inst_t *mi)
{
    cl_t *cl = mi->state;
    if (cl == NULL)
        return;
    cl_member_free(cl); /* first: the etcd thread ends, its answers posted */
    cl_links_free(cl);
    cl_owner_free(cl);
    cl_move_free(cl); /* before the adopter's: its dedup hook goes back first */
    cl_adopt_free(cl);
    cl_run_tasks(cl); /* what was posted but never ran (cl_repl's: before its free) */
    cl_repl_free(cl);
    if (cl->loop.epfd >= 0)
        ev_loop_free(&cl->loop);
    if (cl->wake.fd >= 0)
        close(cl->wake.fd);
    pthread_mutex_destroy(&cl->mu);
    pthread_mutex_destroy(&cl->snap_mu);
    free(cl);
    mi->state = NULL;
}

const module_t cluster_module = {
    .name = "cluster",
    .section = "cluster",
    .conf_size = sizeof(cl_conf_t),
    .conf_defaults = cl_conf_defaults,
    .conf_load = cl_conf_load,
    .conf_walk = cl_conf_walk,
    .init = cl_init,
    .start = cl_start,
    .stop = cl_stop,
    .free = cl_free,
    .turn_end = cl_turn_end,
    .api_routes = cl_api_routes,
    .metrics = cl_metrics,
    .unready = cl_unready,
};

const char *cluster_conf_node(const conf_t *c)
{
    const cl_conf_t *cc = conf_section_values(c, cluster_module.section);
    return cc ? cc->node : "";
}
