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
#include "store.h"
#include "store_rec.h"

static int is_sys(const msg_t *m)
{
    return m->topic_len >= 5 && memcmp(msg_topic(m), "$SYS/", 5) == 0;
}

typedef struct {
    server_t *srv;
    uint64_t now_wall, now_ms;
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
    uint64_t expire_at = 0;
    if (r.expiry) {
        if (r.expiry <= ctx->now_wall) {
            ctx->expired++;
            return 0;
        }
        expire_at = ctx->now_ms + (r.expiry - ctx->now_wall) * 1000u;
    }
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
    load_ctx_t ctx = {.srv = srv, .now_wall = an_wall_s(), .now_ms = an_now_ms()};
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
    if (m->expire_at)
        r.expiry = an_wall_s() + (m->expire_at > w->now ? (m->expire_at - w->now) / 1000u : 0) + 1;
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

void persist_close(server_t *srv)
{
    for (uint32_t i = 0; srv->workers && i < srv->nworkers; i++)
        if (srv->workers[i].batch) {
            if (srv->store)
                store_submit(srv->store, srv->workers[i].batch, committed, NULL);
            else
                store_batch_free(srv->workers[i].batch);
            srv->workers[i].batch = NULL;
        }
    if (srv->store) {
        store_close(srv->store);
        srv->store = NULL;
    }
}
