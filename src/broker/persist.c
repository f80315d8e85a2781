/* persist.c -- the broker's use of the store (see persist.h).
 *
 * Retained message records carry their expiry as wall-clock seconds (the
 * broker's own deadlines are monotonic milliseconds, meaningless after a
 * restart); a record found expired at load is skipped.  A worker's batch
 * is created on the first change of a turn and handed to the store at the
 * end of it; the store owns it from then on.  A failed commit is logged:
 * retained messages are best-effort state, the broker keeps serving.
 */
#include "persist.h"
#include "persist_held.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "endpoint.h"
#include "log.h"
#include "mqtt_codec.h"
#include "mqtt_props.h"
#include "redis_url.h"
#include "router.h"
#include "retain.h"
#include "sess.h"
#include "sess_acl.h"
#include "store.h"
#include "store_rec.h"

static store_batch_t *batch_of(worker_t *w);
static held_ring_t *held_of(worker_t *w);
static void put_session(worker_t *w, store_batch_t *b, const sess_t *s);

/* A store key built by one of the store_key_*() functions: on the stack
 * when short (nearly always), on the heap when a long client id or topic
 * needs more (keys go up to STORE_KEY_MAX, 64 KB: never on the stack of a
 * function called per message).  len 0: the builder refused the input. */
typedef struct {
    uint8_t small[160];
    uint8_t *p;
    size_t len;
} pkey_t;

#define PKEY(k, build, ...)                                                                        \
    do {                                                                                           \
        (k)->len = build(NULL, 0, __VA_ARGS__);                                                    \
        (k)->p = (k)->len <= sizeof((k)->small) ? (k)->small : an_malloc((k)->len);                \
        if ((k)->len)                                                                              \
            build((k)->p, (k)->len, __VA_ARGS__);                                                  \
    } while (0)

static void pkey_done(pkey_t *k)
{
    if (k->p != k->small)
        free(k->p);
}

static int is_sys(const msg_t *m)
{
    return m->topic_len >= 5 && memcmp(msg_topic(m), "$SYS/", 5) == 0;
}

static void retained_gone(void *ud, msg_t *m)
{
    worker_t *w = ud;
    if (persist_on(w) && !is_sys(m)) {
        pkey_t k;
        PKEY(&k, store_key_retained, msg_topic(m), m->topic_len);
        if (k.len)
            store_batch_del(batch_of(w), k.p, k.len);
        pkey_done(&k);
    }
    msg_unref(&m);
}

void persist_on_sweep_timer(tw_timer_t *t)
{
    worker_t *w = container_of(t, worker_t, sweep_timer);
    size_t n = retain_expire(w->srv->retain, w->now, retained_gone, w);
    if (n)
        log_info("%zu expired retained messages removed", n);
    tw_add(&w->tw, &w->sweep_timer, w->now + PERSIST_SWEEP_MS);
}


/* Deadlines: monotonic ms in the broker, unix seconds in the store.  A
 * deadline is rounded down when written, so across a restart a message or
 * session may end up to a second early, never late. */
static uint64_t to_wall_s(uint64_t deadline_ms, uint64_t now_ms)
{
    if (deadline_ms == 0)
        return 0; /* never */
    uint64_t wall_ms = an_wall_ms() + (deadline_ms > now_ms ? deadline_ms - now_ms : 0);
    return AN_MAX(wall_ms / 1000u, 1u);
}

static int wall_passed(uint64_t wall_s, uint64_t now_wall_ms)
{
    return wall_s && wall_s * 1000u <= now_wall_ms;
}

static uint64_t from_wall_s(uint64_t wall_s, uint64_t now_wall_ms, uint64_t now_ms)
{
    if (wall_s == 0)
        return 0;
    return now_ms + (wall_s * 1000u > now_wall_ms ? wall_s * 1000u - now_wall_ms : 0);
}

typedef struct {
    server_t *srv;
    uint64_t now_wall_ms, now_ms;
    store_batch_t *cleanup; /* expired and unreadable records */
    size_t loaded, expired, bad;
} load_ctx_t;

static int load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    load_ctx_t *ctx = ud;
    store_retained_t r;
    if (store_rec_decode_retained(v, vl, &r) != 0) {
        store_batch_del(ctx->cleanup, k, kl);
        ctx->bad++;
        return 0;
    }
    if (wall_passed(r.expiry, ctx->now_wall_ms)) {
        store_batch_del(ctx->cleanup, k, kl);
        ctx->expired++;
        return 0;
    }
    uint64_t expire_at = from_wall_s(r.expiry, ctx->now_wall_ms, ctx->now_ms);
    msg_t *m = msg_new_v5(r.topic, (uint16_t)r.topic_len, r.props, (uint32_t)r.props_len, r.payload,
                          (uint32_t)r.payload_len, r.qos, 1, expire_at);
    retain_set(ctx->srv->retain, m);
    msg_unref(&m);
    ctx->loaded++;
    return 0;
}

/* persistence.redis.prefix with "{node}" replaced by cluster.node, or by
 * "default" without a cluster: nodes sharing one Redis keep apart. */
static void redis_prefix(const conf_t *cf, char *out, size_t len)
{
    persist_redis_prefix(cf, cluster_conf_node(cf), out, len);
}

void persist_redis_prefix(const conf_t *cf, const char *node, char *out, size_t len)
{
    const char *p = cf->persistence_redis.prefix;
    const char *at = strstr(p, "{node}");
    if (node[0] == '\0')
        node = "default";
    if (at == NULL)
        snprintf(out, len, "%s", p);
    else
        snprintf(out, len, "%.*s%s%s", (int)(at - p), p, node, at + 6);
}

int persist_open(server_t *srv)
{
    const conf_t *cf = &srv->conf;
    if (!cf->persistence_enabled)
        return 0;
    store_opts_t o = {.backend = STORE_BACKEND_ROCKSDB,
                      .path = cf->data_dir,
                      .sync = (store_sync_t)cf->persistence_sync,
                      .sync_interval_ms = cf->sync_interval_ms,
                      .recover = cf->persistence_recover};
    char err[768], prefix[sizeof(cf->persistence_redis.prefix) + 64], where[640];
    if (cf->persistence_backend == CONF_STORE_REDIS) {
        redis_prefix(cf, prefix, sizeof(prefix));
        redis_url_t u;
        if (redis_url_parse(cf->persistence_redis.url, &u, err, sizeof(err)) < 0) {
            log_error("persistence: redis url: %s", err); /* conf_load checked it */
            return -1;
        }
        snprintf(where, sizeof(where), "%s %s", u.display, prefix);
        o.backend = STORE_BACKEND_REDIS;
        o.path = where;
        o.redis_url = cf->persistence_redis.url;
        o.redis_prefix = prefix;
        o.redis_connect_timeout_ms = cf->persistence_redis.connect_timeout_ms;
        o.redis_timeout_ms = cf->persistence_redis.timeout_ms;
        o.redis_min_replicas = cf->persistence_redis.min_replicas;
    }
    srv->store = store_open(&o, err, sizeof(err));
    if (srv->store == NULL) {
        log_error("persistence: %s", err);
        if (!o.recover && strstr(err, "Corruption"))
            log_error("persistence: the store in %s is damaged: not starting on it. "
                      "`antenna --recover` starts anyway and keeps what can be read (the "
                      "damaged records are dropped, the original logs copied to "
                      "%s/corrupt-wal-*); or restore a backup (antenna store import)",
                      cf->data_dir, cf->data_dir);
        return -1;
    }
    if (cf->session_store == CONF_SESSIONS_REPLICATED && cluster_replica_boot(cf, srv->store) < 0)
        return -1;
    load_ctx_t ctx = {.srv = srv,
                      .now_wall_ms = an_wall_ms(),
                      .now_ms = an_now_ms(),
                      .cleanup = store_batch_new()};
    uint64_t t0 = an_now_ms();
    int rc = store_scan(srv->store, "r/", 2, load_one, &ctx);
    int rc2 = store_submit_sync(srv->store, ctx.cleanup);
    if (rc == 0)
        rc = rc2;
    if (rc < 0) {
        log_error("persistence: reading %s: %s", o.path, store_strerror(rc));
        return -1;
    }
    log_info("persistence: %s: %zu retained messages loaded in %llu ms (%zu expired and "
             "%zu unreadable removed)",
             o.path, ctx.loaded, (unsigned long long)(an_now_ms() - t0), ctx.expired, ctx.bad);
    return 0;
}

void persist_retained(worker_t *w, const msg_t *m)
{
    if (!persist_on(w) || is_sys(m))
        return;
    pkey_t k;
    PKEY(&k, store_key_retained, msg_topic(m), m->topic_len);
    if (k.len == 0)
        goto out;
    if (m->payload_len == 0) {
        store_batch_del(batch_of(w), k.p, k.len);
        goto out;
    }
    store_retained_t r = {.qos = m->qos,
                          .topic = msg_topic(m),
                          .topic_len = m->topic_len,
                          .props = msg_props(m),
                          .props_len = m->props_len,
                          .payload = msg_payload(m),
                          .payload_len = m->payload_len};
    r.expiry = to_wall_s(m->expire_at, w->now);
    size_t vl = store_rec_encode_retained(&r, NULL, 0);
    void *v = vl ? store_batch_put_reserve(batch_of(w), k.p, k.len, vl) : NULL;
    if (v)
        store_rec_encode_retained(&r, v, vl);
out:
    pkey_done(&k);
}

/* Committer thread: hand the result to the worker, in order. */
static void committed(void *ud, int err)
{
    worker_t *w = ud;
    inbox_vec_t v = {0};
    inbox_item_t it = {.kind = WM_COMMITTED, .sid = (uint64_t)(int64_t)err};
    inbox_vec_push(&v, &it);
    inbox_post(&w->inbox, &v);
    inbox_vec_free(&v);
}

void persist_flush(worker_t *w)
{
    if (w->batch == NULL)
        return;
    store_batch_t *b = w->batch;
    w->batch = NULL;
    int rc = store_submit(w->srv->store, b, committed, w);
    if (rc == 0) {
        held_submitted(held_of(w));
        return;
    }
    /* not queued (the store is closing): what waited for it is refused,
     * in order, with the next batch, which takes its number */
    log_error("persistence: cannot submit a batch: %s", store_strerror(rc));
    held_submit_failed(held_of(w));
}

/* ---- graceful shutdown: every durable session brought up to date ------- */

/* The hot path keeps each stored entry's record; at shutdown every entry is
 * written in its exact state (a QoS 1 message in flight then comes back
 * with DUP), and entries the hot path did not store (delivered before the
 * session became durable, or failed over from a shared subscription) get a
 * new key.  Nothing is deleted: a message routed to a session after its
 * worker stopped is still in the store and comes back at start-up. */
static void save_ring(worker_t *w, sess_t *s, sq_t *q)
{
    for (uint32_t i = 0; i < sq_len(q); i++) {
        sq_entry_t *e = sq_at(q, i);
        if (e->seq == 0)
            e->seq = persist_next_seq(w->srv);
        persist_queue_put(w, s->client_id, s->client_id_len, e->seq, e->m, e->qos, e->retain,
                          e->state, e->state != SQ_QUEUED ? e->pid : 0);
    }
}

static void save_one(worker_t *w, sess_t *s)
{
    put_session(w, batch_of(w), s);
    s->stored = 1;
    save_ring(w, s, &s->inflight);
    save_ring(w, s, &s->queue);
    for (uint32_t i = 0; i < sess_qos2_in_count(s); i++)
        persist_incoming(w, s, sess_qos2_in_at(s, i), 1);
}

int persist_save_sessions(worker_t *w)
{
    if (w->srv->store == NULL)
        return 0;
    w->now = an_now_ms();
    size_t n = 0;
    for (size_t i = 0; i < w->by_sid.nbuckets; i++)
        for (sess_t *s = w->by_sid.buckets[i]; s; s = s->sid_next) {
            if (s->expiry != 0) {
                save_one(w, s);
                n++;
            } else if (s->stored) {
                persist_session_drop(w, s);
            }
        }
    /* also the barrier after this worker's earlier batches: their commit
     * callbacks have run when it returns */
    store_batch_t *b = w->batch ? w->batch : store_batch_new();
    w->batch = NULL;
    /* the sessions are freed next: that must not remove them from the store */
    for (size_t i = 0; i < w->by_sid.nbuckets; i++)
        for (sess_t *s = w->by_sid.buckets[i]; s; s = s->sid_next)
            s->stored = 0;
    int rc = store_submit_sync(w->srv->store, b);
    if (rc < 0)
        log_error("persistence: saving %zu sessions of worker %u failed: %s", n, w->id,
                  store_strerror(rc));
    else if (n)
        log_info("persistence: %zu sessions of worker %u saved", n, w->id);
    return rc;
}

typedef struct {
    server_t *srv;
    uint64_t now_wall_ms, now_ms;
    store_batch_t *cleanup; /* expired, unreadable or orphaned records */
    uint64_t max_seq;
    size_t sessions, messages, bad, dropped;
} sess_load_t;

static sess_t *find_restored(server_t *srv, const uint8_t *id, size_t len)
{
    worker_t *w = &srv->workers[worker_home(srv, id, len)];
    return sess_table_find_id(&w->by_id, id, len);
}

/* Remove every record of client id (name) from the store. */
static void cleanup_client(store_batch_t *b, const void *id, size_t len)
{
    pkey_t k;
    PKEY(&k, store_key_session, id, len);
    if (k.len)
        store_batch_del(b, k.p, k.len);
    pkey_done(&k);
    PKEY(&k, store_key_queue_prefix, id, len);
    if (k.len)
        store_batch_del_prefix(b, k.p, k.len);
    pkey_done(&k);
    PKEY(&k, store_key_incoming_prefix, id, len);
    if (k.len)
        store_batch_del_prefix(b, k.p, k.len);
    pkey_done(&k);
}

static int load_session(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    sess_load_t *ctx = ud;
    store_key_info_t ki;
    store_session_t rec;
    if (store_key_parse(k, kl, &ki) != 0 || ki.name_len == 0 || ki.name_len > UINT16_MAX ||
        store_rec_decode_session(v, vl, &rec) != 0) {
        store_batch_del(ctx->cleanup, k, kl);
        ctx->bad++;
        return 0;
    }
    if (rec.expiry_interval == 0 ||
        (rec.expiry_interval != SESS_NEVER && wall_passed(rec.expiry_deadline, ctx->now_wall_ms))) {
        store_rec_session_free(&rec); /* expired while the broker was down */
        cleanup_client(ctx->cleanup, ki.name, ki.name_len);
        ctx->dropped++;
        return 0;
    }
    server_t *srv = ctx->srv;
    worker_t *w = &srv->workers[worker_home(srv, ki.name, ki.name_len)];
    /* no deadline: it was online when the broker stopped; its interval
     * starts now */
    uint64_t expire_at = rec.expiry_deadline
                             ? from_wall_s(rec.expiry_deadline, ctx->now_wall_ms, ctx->now_ms)
                             : ctx->now_ms + (uint64_t)rec.expiry_interval * 1000u;
    sess_t *s = sess_restore(w, ki.name, (uint16_t)ki.name_len, rec.expiry_interval, expire_at,
                             rec.next_pid);
    sess_acl_set_owner(s, (const char *)rec.owner, rec.owner_len, rec.owner_known);
    for (uint32_t i = 0; i < rec.nsubs; i++)
        sess_subscribe(w, s, rec.subs[i].filter, (uint16_t)rec.subs[i].filter_len,
                       rec.subs[i].options, rec.subs[i].sub_id);
    sess_set_flag(s, SESS_F_DURABLE, 1);
    s->stored = 1; /* after subscribing: its record is already there */
    store_rec_session_free(&rec);
    ctx->sessions++;
    return 0;
}

static int load_outmsg(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    sess_load_t *ctx = ud;
    store_key_info_t ki;
    store_outmsg_t o;
    if (store_key_parse(k, kl, &ki) != 0 || store_rec_decode_outmsg(v, vl, &o) != 0) {
        store_batch_del(ctx->cleanup, k, kl);
        ctx->bad++;
        return 0;
    }
    if (ki.seq > ctx->max_seq)
        ctx->max_seq = ki.seq;
    sess_t *s = find_restored(ctx->srv, ki.name, ki.name_len);
    if (s == NULL) {
        store_batch_del(ctx->cleanup, k, kl); /* its session expired or was unreadable */
        return 0;
    }
    sq_entry_t e = {
        .qos = o.qos, .retain = o.retain, .state = o.state, .pid = o.pid, .seq = ki.seq};
    if (o.state != STORE_OUT_WAIT_PUBCOMP) {
        uint64_t exp = from_wall_s(o.expiry, ctx->now_wall_ms, ctx->now_ms);
        if (wall_passed(o.expiry, ctx->now_wall_ms) && o.state == STORE_OUT_QUEUED) {
            store_batch_del(ctx->cleanup, k, kl); /* expired before it was sent */
            return 0;
        }
        e.m = msg_new_v5(o.topic, (uint16_t)o.topic_len, o.props, (uint32_t)o.props_len, o.payload,
                         (uint32_t)o.payload_len, o.qos, o.retain, exp);
        e.m->store_seq = ki.seq;
        e.m->id_epoch = o.id_epoch; /* its publish id (none from a version 1 record) */
        e.m->id_seq = o.id_seq;
    }
    if (o.state == STORE_OUT_QUEUED) {
        sq_push(&s->queue, &e);
        sq_bytes_add(&s->queue, (uint64_t)o.topic_len + o.props_len + o.payload_len);
    } else {
        sq_push(&s->inflight, &e);
    }
    ctx->messages++;
    return 0;
}

static int load_incoming(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    sess_load_t *ctx = ud;
    store_key_info_t ki;
    (void)v;
    (void)vl;
    sess_t *s =
        store_key_parse(k, kl, &ki) == 0 ? find_restored(ctx->srv, ki.name, ki.name_len) : NULL;
    if (s)
        sess_qos2_in_begin(s, ki.pid);
    else
        store_batch_del(ctx->cleanup, k, kl);
    return 0;
}

int persist_load_sessions(server_t *srv)
{
    if (srv->store == NULL)
        return 0;
    sess_load_t ctx = {.srv = srv,
                       .now_wall_ms = an_wall_ms(),
                       .now_ms = an_now_ms(),
                       .cleanup = store_batch_new()};
    int rc = store_scan(srv->store, "s/", 2, load_session, &ctx);
    if (rc == 0)
        rc = store_scan(srv->store, "q/", 2, load_outmsg, &ctx);
    if (rc == 0)
        rc = store_scan(srv->store, "i/", 2, load_incoming, &ctx);
    int rc2 = store_submit_sync(srv->store, ctx.cleanup);
    if (rc < 0 || rc2 < 0) {
        log_error("persistence: reading sessions from %s: %s",
                  srv->conf.persistence_backend == CONF_STORE_REDIS ? "Redis" : srv->conf.data_dir,
                  store_strerror(rc < 0 ? rc : rc2));
        return -1;
    }
    atomic_store(&srv->next_qseq, ctx.max_seq + 1);
    log_info("persistence: %zu sessions with %zu messages restored (%zu expired removed, "
             "%zu unreadable skipped)",
             ctx.sessions, ctx.messages, ctx.dropped, ctx.bad);
    return 0;
}

void persist_close(server_t *srv)
{
    if (srv->store) {
        store_stats_t st;
        store_stats(srv->store, &st);
        uint64_t up_ms = an_now_ms() - srv->started_ms;
        log_info("persistence: store totals: %llu batches in %llu commits (at most %llu in one), "
                 "%llu syncs (%.1f/s over %.1f s), %llu bytes, %llu write errors",
                 (unsigned long long)st.batches_committed, (unsigned long long)st.commits,
                 (unsigned long long)st.max_group, (unsigned long long)st.syncs,
                 up_ms ? st.syncs * 1000.0 / (double)up_ms : 0.0, up_ms / 1000.0,
                 (unsigned long long)st.bytes_written, (unsigned long long)st.write_errors);
        store_close(srv->store); /* commits what is pending */
        srv->store = NULL;
    }
}

/* ---- the hot path: records, held acknowledgements and routes ----------- */

/* The ring of what waits for a commit, and the batch numbering: created
 * with the first batch. */
static held_ring_t *held_of(worker_t *w)
{
    if (w->held == NULL)
        w->held = an_calloc(1, sizeof(*w->held));
    return w->held;
}

static store_batch_t *batch_of(worker_t *w)
{
    if (w->batch == NULL) {
        held_of(w);
        w->batch = store_batch_new();
    }
    return w->batch;
}

size_t persist_pending_ops(const worker_t *w)
{
    return w->batch ? store_batch_count(w->batch) : 0;
}

void *persist_put_reserve(worker_t *w, const void *k, size_t kl, size_t vl)
{
    store_batch_t *b = batch_of(w);
    held_of(w)->module_puts++;
    return store_batch_put_reserve(b, k, kl, vl);
}

uint64_t persist_next_seq(server_t *srv)
{
    return atomic_fetch_add_explicit(&srv->next_qseq, 1, memory_order_relaxed);
}

uint64_t persist_reserve_seq(server_t *srv, uint64_t n)
{
    return atomic_fetch_add_explicit(&srv->next_qseq, n, memory_order_relaxed);
}

void persist_queue_put(worker_t *w, const char *cid, uint16_t cid_len, uint64_t seq, const msg_t *m,
                       uint8_t qos, uint8_t retain, uint8_t state, uint16_t pid)
{
    if (!persist_on(w) || seq == 0)
        return;
    store_outmsg_t o = {.state = state,
                        .qos = qos,
                        .retain = retain != 0,
                        .dup = state == STORE_OUT_WAIT_PUBREC,
                        .pid = pid};
    if (m) {
        o.topic = msg_topic(m);
        o.topic_len = m->topic_len;
        o.props = msg_props(m);
        o.props_len = m->props_len;
        o.payload = msg_payload(m);
        o.payload_len = m->payload_len;
        o.expiry = to_wall_s(m->expire_at, w->now);
        if (atomic_load_explicit(&w->srv->msg_ids_store, memory_order_relaxed)) {
            o.id_epoch = m->id_epoch; /* 'Q' version 2: every member reads it */
            o.id_seq = m->id_seq;
        }
    } else {
        o.topic = (const uint8_t *)"-"; /* only the PUBREL is left */
        o.topic_len = 1;
    }
    size_t vl = store_rec_encode_outmsg(&o, NULL, 0);
    pkey_t k;
    PKEY(&k, store_key_queue, cid, cid_len, seq);
    void *v = k.len && vl ? store_batch_put_reserve(batch_of(w), k.p, k.len, vl) : NULL;
    if (v)
        store_rec_encode_outmsg(&o, v, vl);
    pkey_done(&k);
}

void persist_queue_del(worker_t *w, const char *cid, uint16_t cid_len, uint64_t seq)
{
    if (!persist_on(w) || seq == 0)
        return;
    pkey_t k;
    PKEY(&k, store_key_queue, cid, cid_len, seq);
    if (k.len)
        store_batch_del(batch_of(w), k.p, k.len);
    pkey_done(&k);
}

static void put_session(worker_t *w, store_batch_t *b, const sess_t *s)
{
    store_sub_t *subs = s->nsubs ? an_calloc(s->nsubs, sizeof(*subs)) : NULL;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        subs[i].filter = s->subs[i].filter;
        subs[i].filter_len = s->subs[i].len;
        subs[i].options = s->subs[i].opts & 0x3f;
        subs[i].sub_id = s->subs[i].subid;
    }
    /* the deadline only means something while offline; online it is 0 and
     * start-up counts the interval from the restart */
    uint64_t deadline = 0;
    if (s->ep == NULL && s->expiry != SESS_NEVER)
        deadline = to_wall_s(sess_expire_at(s), w->now);
    const char *owner = sess_acl_owner(s);
    store_session_t rec = {.expiry_interval = s->expiry,
                           .next_pid = s->next_pid,
                           .nsubs = s->nsubs,
                           .subs = subs,
                           .expiry_deadline = deadline,
                           .owner_known = !s->owner_unknown,
                           .owner = (const uint8_t *)owner,
                           .owner_len = owner ? strlen(owner) : 0};
    size_t vl = store_rec_encode_session(&rec, NULL, 0);
    pkey_t k;
    PKEY(&k, store_key_session, s->client_id, s->client_id_len);
    void *v = k.len && vl ? store_batch_put_reserve(b, k.p, k.len, vl) : NULL;
    if (v)
        store_rec_encode_session(&rec, v, vl);
    pkey_done(&k);
    free(subs);
}

static void drop_session(store_batch_t *b, const sess_t *s)
{
    cleanup_client(b, s->client_id, s->client_id_len);
}

void persist_session_update(worker_t *w, sess_t *s)
{
    if (!persist_on(w))
        return;
    int durable = s->expiry != 0;
    sess_set_flag(s, SESS_F_DURABLE, durable);
    if (durable) {
        put_session(w, batch_of(w), s);
        s->stored = 1;
    } else if (s->stored) {
        drop_session(batch_of(w), s);
        s->stored = 0;
    }
}

void persist_session_drop(worker_t *w, sess_t *s)
{
    sess_set_flag(s, SESS_F_DURABLE, 0);
    if (!persist_on(w) || !s->stored)
        return;
    drop_session(batch_of(w), s);
    s->stored = 0;
}

void persist_incoming(worker_t *w, const sess_t *s, uint16_t pid, int put)
{
    if (!persist_on(w) || !s->stored)
        return;
    pkey_t k;
    PKEY(&k, store_key_incoming, s->client_id, s->client_id_len, pid);
    if (k.len && put) {
        size_t vl = store_rec_encode_incoming(NULL, 0);
        void *v = store_batch_put_reserve(batch_of(w), k.p, k.len, vl);
        if (v)
            store_rec_encode_incoming(v, vl);
    } else if (k.len) {
        store_batch_del(batch_of(w), k.p, k.len);
    }
    pkey_done(&k);
}

static held_item_t *hold(worker_t *w)
{
    batch_of(w); /* an empty batch is a barrier: it commits after the others */
    return held_push(w->held);
}

void persist_hold_ack(worker_t *w, endpoint_t *ep, uint64_t sid, uint8_t type, uint16_t pid,
                      uint8_t reason)
{
    held_item_t *e = hold(w);
    /* the records written since the last hold are this one's (the publish
     * that wrote them is acknowledged right after); with the cluster on,
     * an acknowledgement may reach this ring after others, so it waits for
     * every record so far */
    held_ring_t *h = w->held;
    e->sink_wait = h->sink_emitted;
    e->sink_from = w->srv->route_owners[ROUTE_OWNER_NODE].hold_ack ? 0 : h->sink_taken;
    h->sink_taken = h->sink_emitted;
    e->ep = ep;
    e->sid = sid;
    e->type = type;
    e->pid = pid;
    e->reason = reason;
}

void persist_hold_ack_batch(worker_t *w, endpoint_t *ep, uint64_t sid, uint8_t type, uint16_t pid,
                            uint8_t reason, uint64_t batch)
{
    persist_hold_ack(w, ep, sid, type, pid, reason);
    held_at(w->held, held_len(w->held) - 1)->batch = batch; /* behind the rest anyway */
}

uint64_t persist_held_batch(worker_t *w)
{
    return held_of(w)->batch_no;
}

int persist_must_wait(const worker_t *w, int commit, uint64_t batch)
{
    const held_ring_t *h = w->held;
    return h != NULL &&
           (held_len(h) > 0 || (commit && !held_batch_is_committed(batch, h->committed_no)));
}

int persist_holding_routes(const worker_t *w)
{
    return w->held && w->held->routes;
}

void persist_hold_route(worker_t *w, msg_t *m, const route_target_t *t, size_t n, uint64_t ticket)
{
    held_item_t *e = hold(w);
    e->m = msg_ref(m);
    e->ticket = ticket;
    e->nt = (uint32_t)n;
    if (n) {
        e->t = an_malloc(n * sizeof(*t));
        memcpy(e->t, t, n * sizeof(*t));
    }
    w->held->routes++;
}

void persist_hold_send(worker_t *w, uint64_t sid, uint16_t pid)
{
    held_item_t *e = hold(w);
    e->sid = sid;
    e->pid = pid;
}

void persist_forget_endpoint(worker_t *w, endpoint_t *ep)
{
    if (w->held)
        held_forget_endpoint(w->held, ep);
}

static void release_ack(worker_t *w, const held_item_t *e, int err)
{
    if (e->ep == NULL)
        return; /* its endpoint is gone */
    uint8_t reason = e->reason;
    if (err < 0 && e->type == EP_ACK_PUBCOMP) {
        reason = 0; /* the release is done in memory; the stored id goes at restart */
    } else if (err < 0) {
        sess_t *s = e->type == EP_ACK_PUBREC ? worker_find_sid(w, e->sid) : NULL;
        if (s)
            sess_qos2_in_end(s, e->pid); /* refused: a resend is new */
        /* refused; an endpoint that cannot say so (MQTT 3.1.1) closes, and
         * its client resends */
        reason = MQTT_RC_QUOTA_EXCEEDED;
    }
    ep_ack(e->ep, e->type, e->pid, reason, EP_ACK_HELD);
}

/* ---- acknowledgements after a sink ("ack": "sink") ----
 *
 * A sink action with "ack": "sink" numbers each record it writes on this
 * worker (persist_sink_ack_emitted).  The acknowledgement held next
 * (persist_hold_ack: the publish that wrote them) takes the records
 * numbered since the previous hold, (sink_from, sink_wait]; once its
 * batch is committed it waits in the sink stage until they are all
 * confirmed (persist_sink_ack_done, from the sink's thread through the
 * worker's inbox).  The stage keeps each endpoint's acknowledgements in
 * order (one waits behind an earlier one of its endpoint); the others pass.
 * A re-held acknowledgement (a route released after its commit wrote)
 * takes the records that route wrote.  Nothing changes while no action
 * asks: every range is empty and the stage stays empty. */
static void sink_stage_push(held_ring_t *h, const held_item_t *e, int rc)
{
    if (h->after_sink == NULL)
        h->after_sink = an_calloc(1, sizeof(*h->after_sink));
    held_item_t *x = held_push(h->after_sink);
    *x = *e;
    x->rc = rc;
}

/* Every record of (from, to] confirmed. */
static int sink_range_done(const held_ring_t *h, uint64_t from, uint64_t to)
{
    if (to <= h->sink_confirmed)
        return 1;
    uint64_t lo = from > h->sink_confirmed ? from : h->sink_confirmed, have = 0;
    for (size_t i = 0; i < h->nsink_ooo; i++)
        have += h->sink_ooo[i] > lo && h->sink_ooo[i] <= to;
    return have == to - lo;
}

/* An acknowledgement of ep waits in the stage. */
static int sink_stage_has(held_ring_t *h, const endpoint_t *ep)
{
    held_ring_t *q = h->after_sink;
    for (size_t i = 0; ep && q && i < held_len(q); i++)
        if (held_at(q, i)->ep == ep)
            return 1;
    return 0;
}

/* Release what is confirmed and not behind an earlier one of its endpoint. */
static void sink_stage_run(worker_t *w, held_ring_t *h)
{
    held_ring_t *q = h->after_sink;
    if (q == NULL || held_len(q) == 0)
        return;
    size_t n = held_len(q), nblocked = 0;
    const endpoint_t *blocked[64];
    held_item_t it;
    for (size_t i = 0; i < n; i++) {
        held_shift(q, &it);
        int behind = 0;
        for (size_t b = 0; it.ep && b < nblocked && !behind; b++)
            behind = blocked[b] == it.ep;
        if (!behind && (it.ep == NULL || nblocked < sizeof(blocked) / sizeof(blocked[0])) &&
            sink_range_done(h, it.sink_from, it.sink_wait)) {
            release_ack(w, &it, it.rc);
            continue;
        }
        if (!behind && it.ep && nblocked < sizeof(blocked) / sizeof(blocked[0]))
            blocked[nblocked++] = it.ep;
        *held_push(q) = it; /* kept, in order */
    }
}

uint64_t persist_sink_ack_emitted(worker_t *w)
{
    return ++held_of(w)->sink_emitted;
}

void persist_sink_ack_done(worker_t *w, uint64_t n)
{
    held_ring_t *h = held_of(w);
    if (n == h->sink_confirmed + 1) {
        h->sink_confirmed++;
        size_t k = 0;
        while (k < h->nsink_ooo && h->sink_ooo[k] == h->sink_confirmed + 1) {
            h->sink_confirmed++;
            k++;
        }
        if (k) {
            memmove(h->sink_ooo, h->sink_ooo + k, (h->nsink_ooo - k) * sizeof(*h->sink_ooo));
            h->nsink_ooo -= k;
        }
    } else if (n > h->sink_confirmed) { /* out of order: kept sorted */
        if (h->nsink_ooo == h->cap_sink_ooo) {
            h->cap_sink_ooo = h->cap_sink_ooo ? 2 * h->cap_sink_ooo : 64;
            h->sink_ooo = an_realloc(h->sink_ooo, h->cap_sink_ooo * sizeof(*h->sink_ooo));
        }
        size_t i = h->nsink_ooo;
        while (i > 0 && h->sink_ooo[i - 1] > n)
            i--;
        memmove(h->sink_ooo + i + 1, h->sink_ooo + i, (h->nsink_ooo - i) * sizeof(*h->sink_ooo));
        h->sink_ooo[i] = n;
        h->nsink_ooo++;
    }
    sink_stage_run(w, h);
}

void persist_on_committed(worker_t *w, int err)
{
    held_ring_t *h = held_of(w);
    held_item_t it, *e = &it;
    held_committed(h);
    if (err < 0) {
        w->store_errors++;
        if (w->now >= w->store_err_logged_at + 1000u) { /* one line a second at most */
            w->store_err_logged_at = w->now;
            log_error("persistence: %llu batches not stored (%s): their QoS 1/2 messages are "
                      "refused",
                      (unsigned long long)w->store_errors, store_strerror(err));
            w->store_errors = 0;
        }
    }
    /* by value: releasing one may hold new ones (see persist_held.h).  A
     * released route may make a module write to the batch being filled (a
     * rule's sink record, persist_put_reserve): every acknowledgement
     * behind it then waits for that batch too, so none leaves before what
     * its message caused is stored (and they keep their order) */
    uint64_t puts = h->module_puts;
    while (held_pop(h, &it)) {
        int rc = e->failed ? STORE_ESHUTDOWN : err;
        if (e->m) {
            h->routes--;
            if (rc == 0) {
                router_hand_held(w, e->m, e->t, e->nt, e->ticket);
            } else {
                STAT_ADD(w->stats.msgs_dropped, 1);
                if (event_wanted(w->srv, EVENT_MESSAGE_DROPPED)) {
                    event_dropped_t ev = {.msg = e->m,
                                          .topic = msg_topic(e->m),
                                          .topic_len = e->m->topic_len,
                                          .qos = e->m->qos,
                                          .reason = EVENT_DROP_STORE_FAILED};
                    event_emit(w, &w->srv->events, EVENT_MESSAGE_DROPPED, &ev);
                }
            }
            msg_unref(&e->m);
            free(e->t);
        } else if (e->type) {
            if (rc == 0 && e->ep && h->module_puts != puts)
                persist_hold_ack(w, e->ep, e->sid, e->type, e->pid, e->reason);
            else if (!sink_range_done(h, e->sink_from, e->sink_wait) || sink_stage_has(h, e->ep))
                sink_stage_push(h, e, rc);
            else
                release_ack(w, e, rc);
        } else {
            /* not stored: not sent now either; the session resends its
             * window when the client comes back */
            sess_t *ss = worker_find_sid(w, e->sid);
            if (ss && rc == 0)
                sess_send_held(ss, e->pid);
        }
    }
}

static void run_committed(worker_t *w, inbox_item_t *it)
{
    persist_on_committed(w, (int)(int64_t)it->sid);
}

void persist_register_inbox(server_t *srv)
{
    static const worker_inbox_kind_t committed = {.run = run_committed};
    worker_inbox_register(srv, WM_COMMITTED, &committed);
}

void persist_worker_final(worker_t *w)
{
    if (w->batch) {
        store_batch_t *b = w->batch;
        w->batch = NULL;
        int rc = store_submit_sync(w->srv->store, b);
        if (rc < 0)
            log_error("persistence: the last writes of worker %u were not stored: %s", w->id,
                      store_strerror(rc));
    }
    held_ring_t *h = w->held;
    if (h == NULL)
        return;
    for (size_t i = 0; i < held_len(h); i++) {
        held_item_t *e = held_at(h, i);
        msg_unref(&e->m);
        free(e->t);
    }
    held_free(h);
    free(h);
    w->held = NULL;
}
