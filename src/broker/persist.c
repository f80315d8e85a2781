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

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "retain.h"
#include "sess.h"
#include "store.h"
#include "store_rec.h"

static int is_sys(const msg_t *m)
{
    return m->topic_len >= 5 && memcmp(msg_topic(m), "$SYS/", 5) == 0;
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
    size_t loaded, expired, bad;
} load_ctx_t;

static int load_one(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    load_ctx_t *ctx = ud;
    (void)k;
    (void)kl;
    store_retained_t r;
    if (store_rec_decode_retained(v, vl, &r) != 0) {
        ctx->bad++;
        return 0;
    }
    if (wall_passed(r.expiry, ctx->now_wall_ms)) {
        ctx->expired++;
        return 0;
    }
    uint64_t expire_at = from_wall_s(r.expiry, ctx->now_wall_ms, ctx->now_ms);
    msg_t *m = msg_new_v5(r.topic, (uint16_t)r.topic_len, r.props, (uint32_t)r.props_len,
                          r.payload, (uint32_t)r.payload_len, r.qos, 1, expire_at);
    retain_set(ctx->srv->retain, m);
    msg_unref(&m);
    ctx->loaded++;
    return 0;
}

int persist_open(server_t *srv)
{
    const conf_t *cf = &srv->conf;
    if (!cf->persistence_enabled)
        return 0;
    store_opts_t o = {.backend = STORE_BACKEND_ROCKSDB, .path = cf->data_dir,
                      .sync = (store_sync_t)cf->persistence_sync,
                      .sync_interval_ms = cf->sync_interval_ms};
    char err[512];
    srv->store = store_open(&o, err, sizeof(err));
    if (srv->store == NULL) {
        log_error("persistence: %s", err);
        return -1;
    }
    load_ctx_t ctx = {.srv = srv, .now_wall_ms = an_wall_ms(), .now_ms = an_now_ms()};
    uint64_t t0 = an_now_ms();
    int rc = store_scan(srv->store, "r/", 2, load_one, &ctx);
    if (rc < 0) {
        log_error("persistence: reading %s: %s", cf->data_dir, store_strerror(rc));
        return -1;
    }
    log_info("persistence: %s: %zu retained messages loaded in %llu ms (%zu expired, "
             "%zu unreadable skipped)", cf->data_dir, ctx.loaded,
             (unsigned long long)(an_now_ms() - t0), ctx.expired, ctx.bad);
    return 0;
}

void persist_retained(worker_t *w, const msg_t *m)
{
    server_t *srv = w->srv;
    if (srv->store == NULL || is_sys(m))
        return;
    uint8_t small[256], *key = small;
    size_t kl = store_key_retained(NULL, 0, msg_topic(m), m->topic_len);
    if (kl == 0)
        return;
    if (kl > sizeof(small))
        key = an_malloc(kl);
    store_key_retained(key, kl, msg_topic(m), m->topic_len);
    if (w->batch == NULL)
        w->batch = store_batch_new();
    if (m->payload_len == 0) {
        store_batch_del(w->batch, key, kl);
        goto out;
    }
    store_retained_t r = {.qos = m->qos, .topic = msg_topic(m), .topic_len = m->topic_len,
                          .props = msg_props(m), .props_len = m->props_len,
                          .payload = msg_payload(m), .payload_len = m->payload_len};
    r.expiry = to_wall_s(m->expire_at, w->now);
    size_t vl = store_rec_encode_retained(&r, NULL, 0);
    if (vl) {
        void *v = store_batch_put_reserve(w->batch, key, kl, vl);
        store_rec_encode_retained(&r, v, vl);
    }
out:
    if (key != small)
        free(key);
}

static void committed(void *ud, int err)
{
    (void)ud;
    if (err < 0)
        log_error("persistence: a batch of retained messages was not stored: %s",
                  store_strerror(err));
}

void persist_flush(worker_t *w)
{
    if (w->batch == NULL)
        return;
    store_batch_t *b = w->batch;
    w->batch = NULL;
    int rc = store_submit(w->srv->store, b, committed, NULL);
    if (rc < 0)
        log_error("persistence: cannot submit a batch: %s", store_strerror(rc));
}

/* ---- sessions across a graceful restart -------------------------------- */

/* Put one record whose key and value are sized by their builders. */
static void put_outmsg(store_batch_t *b, const sess_t *s, uint64_t seq,
                       const store_outmsg_t *o)
{
    size_t kl = store_key_queue(NULL, 0, s->client_id, s->client_id_len, seq);
    size_t vl = store_rec_encode_outmsg(o, NULL, 0);
    if (kl == 0 || vl == 0)
        return;
    uint8_t *key = an_malloc(kl);
    store_key_queue(key, kl, s->client_id, s->client_id_len, seq);
    store_rec_encode_outmsg(o, store_batch_put_reserve(b, key, kl, vl), vl);
    free(key);
}

static uint64_t save_ring(worker_t *w, store_batch_t *b, sess_t *s, sq_t *q, uint64_t seq)
{
    for (uint32_t i = 0; i < sq_len(q); i++) {
        const sq_entry_t *e = sq_at(q, i);
        store_outmsg_t o = {.state = e->state, .qos = e->qos, .retain = e->retain != 0,
                            .dup = e->state != SQ_QUEUED && e->qos > 0,
                            .pid = e->state != SQ_QUEUED ? e->pid : 0};
        if (e->m) {
            o.topic = msg_topic(e->m);
            o.topic_len = e->m->topic_len;
            o.props = msg_props(e->m);
            o.props_len = e->m->props_len;
            o.payload = msg_payload(e->m);
            o.payload_len = e->m->payload_len;
            o.expiry = to_wall_s(e->m->expire_at, w->now);
        } else {
            o.topic = (const uint8_t *)"-"; /* only the PUBREL is left */
            o.topic_len = 1;
        }
        put_outmsg(b, s, seq++, &o);
    }
    return seq;
}

static void save_one(worker_t *w, store_batch_t *b, sess_t *s)
{
    store_sub_t *subs = s->nsubs ? an_calloc(s->nsubs, sizeof(*subs)) : NULL;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        subs[i].filter = s->subs[i]->filter;
        subs[i].filter_len = s->subs[i]->len;
        subs[i].options = s->subs[i]->opts & 0x3f;
        subs[i].sub_id = s->subs[i]->subid;
    }
    store_session_t rec = {.expiry_interval = s->expiry, .next_pid = s->next_pid,
                           .nsubs = s->nsubs, .subs = subs,
                           .expiry_deadline = s->expiry == SESS_NEVER ? 0 : to_wall_s(s->expire_at, w->now)};
    size_t kl = store_key_session(NULL, 0, s->client_id, s->client_id_len);
    size_t vl = store_rec_encode_session(&rec, NULL, 0);
    if (kl && vl) {
        uint8_t *key = an_malloc(kl);
        store_key_session(key, kl, s->client_id, s->client_id_len);
        store_rec_encode_session(&rec, store_batch_put_reserve(b, key, kl, vl), vl);
        free(key);
        uint64_t seq = save_ring(w, b, s, &s->inflight, 1);
        save_ring(w, b, s, &s->queue, seq);
        for (uint32_t i = 0; i < s->nqos2_in; i++) {
            size_t il = store_key_incoming(NULL, 0, s->client_id, s->client_id_len, s->qos2_in[i]);
            size_t rl = store_rec_encode_incoming(NULL, 0);
            uint8_t *ik = an_malloc(il);
            store_key_incoming(ik, il, s->client_id, s->client_id_len, s->qos2_in[i]);
            store_rec_encode_incoming(store_batch_put_reserve(b, ik, il, rl), rl);
            free(ik);
        }
    }
    free(subs);
}

int persist_save_sessions(worker_t *w)
{
    if (w->srv->store == NULL)
        return 0;
    w->now = an_now_ms();
    store_batch_t *b = store_batch_new();
    size_t n = 0;
    for (size_t i = 0; i < w->by_sid.nbuckets; i++)
        for (sess_t *s = w->by_sid.buckets[i]; s; s = s->sid_next)
            if (s->expiry != 0) {
                save_one(w, b, s);
                n++;
            }
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
    store_batch_t *cleanup; /* what was read is removed */
    size_t sessions, messages, bad;
} sess_load_t;

static sess_t *find_restored(server_t *srv, const uint8_t *id, size_t len)
{
    worker_t *w = &srv->workers[worker_home(srv, id, len)];
    return sess_table_find_id(&w->by_id, id, len);
}

static int load_session(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    sess_load_t *ctx = ud;
    store_key_info_t ki;
    store_session_t rec;
    store_batch_del(ctx->cleanup, k, kl);
    if (store_key_parse(k, kl, &ki) != 0 || ki.name_len > UINT16_MAX ||
        store_rec_decode_session(v, vl, &rec) != 0) {
        ctx->bad++;
        return 0;
    }
    if (rec.expiry_interval != SESS_NEVER && wall_passed(rec.expiry_deadline, ctx->now_wall_ms)) {
        store_rec_session_free(&rec); /* expired while the broker was down */
        return 0;
    }
    server_t *srv = ctx->srv;
    worker_t *w = &srv->workers[worker_home(srv, ki.name, ki.name_len)];
    sess_t *s = sess_restore(w, ki.name, (uint16_t)ki.name_len, rec.expiry_interval,
                             from_wall_s(rec.expiry_deadline, ctx->now_wall_ms, ctx->now_ms),
                             rec.next_pid);
    for (uint32_t i = 0; i < rec.nsubs; i++)
        sess_subscribe(w, s, rec.subs[i].filter, (uint16_t)rec.subs[i].filter_len,
                       rec.subs[i].options, rec.subs[i].sub_id);
    store_rec_session_free(&rec);
    ctx->sessions++;
    return 0;
}

static int load_outmsg(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    sess_load_t *ctx = ud;
    store_key_info_t ki;
    store_outmsg_t o;
    store_batch_del(ctx->cleanup, k, kl);
    if (store_key_parse(k, kl, &ki) != 0 || store_rec_decode_outmsg(v, vl, &o) != 0) {
        ctx->bad++;
        return 0;
    }
    sess_t *s = find_restored(ctx->srv, ki.name, ki.name_len);
    if (s == NULL)
        return 0; /* its session expired or was unreadable */
    sq_entry_t e = {.qos = o.qos, .retain = o.retain, .state = o.state, .pid = o.pid};
    if (o.state != STORE_OUT_WAIT_PUBCOMP) {
        uint64_t exp = from_wall_s(o.expiry, ctx->now_wall_ms, ctx->now_ms);
        if (wall_passed(o.expiry, ctx->now_wall_ms) && o.state == STORE_OUT_QUEUED)
            return 0; /* expired before onward delivery started */
        e.m = msg_new_v5(o.topic, (uint16_t)o.topic_len, o.props, (uint32_t)o.props_len,
                         o.payload, (uint32_t)o.payload_len, o.qos, o.retain, exp);
    }
    if (o.state == STORE_OUT_QUEUED) {
        sq_push(&s->queue, &e);
        s->queued_bytes += (uint64_t)o.topic_len + o.props_len + o.payload_len;
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
    store_batch_del(ctx->cleanup, k, kl);
    if (store_key_parse(k, kl, &ki) != 0)
        return 0;
    sess_t *s = find_restored(ctx->srv, ki.name, ki.name_len);
    if (s)
        sess_qos2_in_begin(s, ki.pid);
    return 0;
}

int persist_load_sessions(server_t *srv)
{
    if (srv->store == NULL)
        return 0;
    sess_load_t ctx = {.srv = srv, .now_wall_ms = an_wall_ms(), .now_ms = an_now_ms(),
                       .cleanup = store_batch_new()};
    int rc = store_scan(srv->store, "s/", 2, load_session, &ctx);
    if (rc == 0)
        rc = store_scan(srv->store, "q/", 2, load_outmsg, &ctx);
    if (rc == 0)
        rc = store_scan(srv->store, "i/", 2, load_incoming, &ctx);
    int rc2 = store_submit_sync(srv->store, ctx.cleanup);
    if (rc < 0 || rc2 < 0) {
        log_error("persistence: reading sessions from %s: %s", srv->conf.data_dir,
                  store_strerror(rc < 0 ? rc : rc2));
        return -1;
    }
    log_info("persistence: %zu sessions with %zu messages restored (%zu unreadable skipped)",
             ctx.sessions, ctx.messages, ctx.bad);
    return 0;
}

void persist_close(server_t *srv)
{
    if (srv->store) {
        store_close(srv->store); /* commits what is pending */
        srv->store = NULL;
    }
}
