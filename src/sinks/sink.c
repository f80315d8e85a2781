/* sink.c -- the sink framework (sink.h, sinks.h, docs/sinks.md): the
 * `sinks:` section, one thread per sink feeding its driver, the buffer in
 * the store, retries, dead letters, the overflow policy, the API and the
 * metrics.
 *
 * The path of a record.  On the worker that evaluated a rule, the sink
 * action renders the row into the worker's sink_out_t (three reusable
 * buffers: key, value, headers), copies the parts into one sink_rec_t,
 * draws the sink's next sequence number and, with persistence on, writes
 * the record into the worker's store batch of this turn ("\0sink/NAME/" +
 * the big-endian seq): a QoS 1/2 PUBACK of the message then waits for its
 * commit (persist.h; persist_on_committed holds the acknowledgements behind
 * a route that wrote, so a message routed after its own commit cannot be
 * acknowledged before its record is stored).  The record joins the
 * worker's list for that sink (worker-owned, no lock) and the worker asks
 * for turn_end.  At the end of the turn, after persist_flush submitted the
 * batch, turn_end moves each list into the sink's intake under the sink's
 * mutex (once per sink and turn) and wakes the sink's thread only when it
 * sleeps (sleeping flag, read under the mutex).  Since the record's put was
 * submitted before the sink's thread can see it, its deletion (submitted
 * later by that thread) always commits after it.
 *
 * The sink's thread owns everything else: the ready queue (seq order per
 * worker), the retry list (due times), the records in flight, its store
 * batch of deletions (submitted once per loop, never waited for), and the
 * driver's state.  It takes the intake, applies drop_oldest, sends batches
 * of at most batch.max_messages while fewer than max_inflight are in
 * flight, and calls the driver's poll() to wait (its wake() interrupts).
 * sink_done() runs on it.  A dead letter is a QoS 1 message handed to a
 * worker as a WM_SINKS inbox item (router_publish runs on workers only).
 *
 * Counters: written by the sink's thread (STAT_ADD, one writer) except
 * `queued`, `queued_bytes`, `appended` and `refused`, which workers change
 * once per turn (atomic adds).  The API and /metrics read them.
 *
 * Start-up: the stored records of each sink are read back in key (seq)
 * order into its ready queue, and the sequence goes on after the last.
 */
#include "sinks.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "msg.h"
#include "mqtt_props.h"
#include "persist.h"
#include "router.h"
#include "rules/rules_action.h"
#include "server.h"
#include "sink.h"
#include "store.h"
#include "util.h"

#define SINK_MAX 8
#define SINK_NAME_MAX 48
#define SINK_DRV_CONF_MAX 4096 /* bytes of one sink's driver configuration */
#define SINK_DL_TOPIC_MAX 256
#define SINK_PREFIX "\0sink/"
#define SINK_PREFIX_LEN 6
#define SINK_REC_HDR 21 /* stored value: version, ts_ms, klen, vlen, hlen */

enum { OVERFLOW_DROP_OLDEST = 0, OVERFLOW_BACKPRESSURE = 1 };

/* The drivers, by `type:` (KAFKA and INFLUX add theirs here). */
static const sink_driver_t *const drivers[] = {
    &sink_webhook_driver,
    &sink_kafka_driver,
    &sink_influx_driver,
    NULL,
};

typedef struct {
    char name[SINK_NAME_MAX];
    uint8_t type; /* index into drivers[] */
    uint32_t buf_max_messages;
    uint64_t buf_max_bytes;
    uint8_t overflow; /* OVERFLOW_* */
    uint32_t batch_max;
    uint32_t linger_ms;
    uint32_t retry_max_attempts;
    uint32_t retry_backoff_ms;
    uint32_t retry_max_backoff_ms;
    uint32_t max_inflight;
    char dead_letter_topic[SINK_DL_TOPIC_MAX];
    _Alignas(16) unsigned char drv[SINK_DRV_CONF_MAX];
} sink_conf_t;

typedef struct {
    uint32_t max_record_bytes;
    uint32_t n;
    sink_conf_t s[SINK_MAX];
} sinks_conf_t;

/* A worker's buffer for render(): the parts of one record. */
typedef struct {
    char *p;
    size_t len, cap;
} part_t;
struct sink_out_s {
    part_t k, v, h;
    size_t max; /* sinks.max_record_bytes */
};

typedef struct {
    sink_rec_t *rec;
    uint64_t due; /* an_now_ms() */
} retry_t;

struct sink_s {
    server_t *srv;
    const sink_conf_t *conf;
    const sink_driver_t *drv;
    uint32_t id;
    char key[SINK_PREFIX_LEN + SINK_NAME_MAX + 1]; /* "\0sink/NAME/" */
    size_t key_len;
    _Atomic uint64_t next_seq;
    /* intake: workers append under mu once per turn */
    pthread_mutex_t mu;
    pthread_cond_t cond; /* the thread's wait while it has no driver */
    sink_rec_t *in_head, *in_tail;
    int sleeping;    /* under mu: the thread waits (wake it) */
    void *drv_state; /* under mu for wake(); the thread's otherwise */
    int stop;        /* under mu */
    pthread_t thread;
    uint8_t started;
    /* the thread's own */
    sink_rec_t *q_head, *q_tail;
    retry_t *retries;
    size_t nretries, cap_retries;
    uint32_t inflight_n;
    store_batch_t *del;
    uint32_t dl_next;
    inbox_vec_t *acks; /* [nworkers]: "ack": "sink" confirmations to post */
    uint8_t acks_pending;
    uint64_t open_backoff;
    uint8_t closing; /* the driver is being closed: RETRY means "keep it" */
    /* counters */
    _Atomic uint64_t queued, queued_bytes, appended, refused;
    an_counter_t sent, succeeded, retried, failed, dropped, dead_lettered, render_failed, inflight,
        open_failures;
    an_hist_t latency;
};

typedef struct {
    server_t *srv;
    const sinks_conf_t *conf;
    uint32_t index; /* module index */
    uint32_t n;
    sink_t *s[SINK_MAX];
} sinks_state_t;

typedef struct {
    sink_rec_t *head, *tail;
    uint32_t n;
    uint64_t bytes;
} pend_t;

typedef struct {
    struct sink_out_s out;
    pend_t pend[SINK_MAX];
} sinks_worker_t;

struct sink_action_s {
    sink_t *s; /* NULL: a check of the file */
    sinks_state_t *st;
    void *state;      /* the driver's */
    uint8_t ack_sink; /* "ack": "sink" */
};

/* A record's acknowledgement ("ack": "sink"): the evaluating worker and
 * its number there (persist_sink_ack_emitted), in rec->ack. */
#define ACK_WORKER_SHIFT 48
_Static_assert(sizeof(uintptr_t) >= 8, "a record's ack packs a worker and a number");
enum { ITEM_DEAD_LETTER = 0, ITEM_ACKED = 1 };

/* ---- accessors (sink.h) ---- */

const char *sink_name(const sink_t *s)
{
    return s->conf->name;
}
const void *sink_conf(const sink_t *s)
{
    return s->conf->drv;
}
struct server_s *sink_server(const sink_t *s)
{
    return s->srv;
}

static sinks_state_t *state_of(server_t *srv)
{
    for (uint32_t i = 0; srv && i < srv->nmodules; i++)
        if (srv->modules[i].m == &sinks_module)
            return srv->modules[i].state;
    return NULL;
}

static sink_t *sink_find(sinks_state_t *st, const char *name)
{
    for (uint32_t i = 0; st && i < st->n; i++)
        if (strcmp(st->s[i]->conf->name, name) == 0)
            return st->s[i];
    return NULL;
}

/* ---- render buffers ---- */

static int part_add(sink_out_t *o, part_t *p, const char *d, size_t n)
{
    if (o->k.len + o->v.len + o->h.len + n > o->max)
        return -1;
    if (p->len + n > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        while (cap < p->len + n)
            cap *= 2;
        p->p = an_realloc(p->p, cap);
        p->cap = cap;
    }
    memcpy(p->p + p->len, d, n);
    p->len += n;
    return 0;
}

int sink_out_key(sink_out_t *o, const char *p, size_t n)
{
    return part_add(o, &o->k, p, n);
}
int sink_out_value(sink_out_t *o, const char *p, size_t n)
{
    return part_add(o, &o->v, p, n);
}
int sink_out_header(sink_out_t *o, const char *name, const char *value, size_t vlen)
{
    size_t nl = strlen(name);
    if (o->k.len + o->v.len + o->h.len + nl + vlen + 2 > o->max)
        return -1;
    if (part_add(o, &o->h, name, nl + 1) < 0 || part_add(o, &o->h, value, vlen) < 0)
        return -1;
    return part_add(o, &o->h, "", 1);
}

/* ---- records ---- */

static size_t rec_bytes(const sink_rec_t *r)
{
    return (size_t)r->klen + r->vlen + r->hlen;
}

static sink_rec_t *rec_new(uint64_t seq, uint64_t ts, const void *k, uint32_t kl, const void *v,
                           uint32_t vl, const void *h, uint32_t hl)
{
    sink_rec_t *r = an_malloc(sizeof(*r) + (size_t)kl + vl + hl);
    r->seq = seq;
    r->ts_ms = ts;
    r->attempts = 0;
    r->klen = kl;
    r->vlen = vl;
    r->hlen = hl;
    r->ack = NULL;
    r->next = NULL;
    if (kl)
        memcpy(r->data, k, kl);
    if (vl)
        memcpy(r->data + kl, v, vl);
    if (hl)
        memcpy(r->data + kl + vl, h, hl);
    return r;
}

static size_t store_key(const sink_t *s, uint64_t seq, char *out)
{
    memcpy(out, s->key, s->key_len);
    for (int i = 0; i < 8; i++)
        out[s->key_len + (size_t)i] = (char)(uint8_t)(seq >> (56 - 8 * i));
    return s->key_len + 8;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static void rec_store(worker_t *w, sink_t *s, const sink_rec_t *r)
{
    char key[sizeof(s->key) + 8];
    size_t kl = store_key(s, r->seq, key);
    size_t n = rec_bytes(r);
    uint8_t *v = persist_put_reserve(w, key, kl, SINK_REC_HDR + n);
    if (v == NULL)
        return; /* over the store's limits: the batch is refused, and so is the ack */
    v[0] = 1;
    put_u64(v + 1, r->ts_ms);
    put_u32(v + 9, r->klen);
    put_u32(v + 13, r->vlen);
    put_u32(v + 17, r->hlen);
    memcpy(v + SINK_REC_HDR, r->data, n);
}

/* The sink's thread: r leaves the buffer (completed, dropped). */
static void rec_forget(sink_t *s, sink_rec_t *r)
{
    if (r->ack) { /* its publisher's acknowledgement may go */
        uintptr_t a = (uintptr_t)r->ack;
        inbox_vec_push(&s->acks[a >> ACK_WORKER_SHIFT],
                       &(inbox_item_t){.kind = WM_SINKS,
                                       .flags = ITEM_ACKED,
                                       .sid = a & ((UINT64_C(1) << ACK_WORKER_SHIFT) - 1)});
        s->acks_pending = 1;
    }
    if (s->srv->store) {
        char key[sizeof(s->key) + 8];
        size_t kl = store_key(s, r->seq, key);
        if (s->del == NULL)
            s->del = store_batch_new();
        store_batch_del(s->del, key, kl);
    }
    atomic_fetch_sub(&s->queued, 1);
    atomic_fetch_sub(&s->queued_bytes, rec_bytes(r));
    free(r);
}

static void flush_acks(sink_t *s)
{
    if (!s->acks_pending)
        return;
    s->acks_pending = 0;
    for (uint32_t i = 0; i < s->srv->nworkers; i++)
        if (s->acks[i].len)
            inbox_post(&s->srv->workers[i].inbox, &s->acks[i]);
}

static void flush_deletions(sink_t *s)
{
    flush_acks(s); /* (the deletions need not be stored first) */
    if (s->del == NULL)
        return;
    store_batch_t *b = s->del;
    s->del = NULL;
    int rc = store_submit(s->srv->store, b, NULL, NULL);
    if (rc < 0)
        log_limited(1000, AN_LOG_WARN, "sink %s: deleting sent records: %s", s->conf->name,
                    store_strerror(rc));
}

/* ---- the worker side ---- */

static int emit(sinks_state_t *st, sink_t *s, void *state, int ack_sink, worker_t *w, json_t *row,
                const msg_t *m)
{
    sinks_worker_t *sw = module_worker_ctx(w, st->index);
    pend_t *p = &sw->pend[s->id];
    const sink_conf_t *c = s->conf;
    if (c->overflow == OVERFLOW_BACKPRESSURE) {
        uint64_t q = atomic_load_explicit(&s->queued, memory_order_relaxed) + p->n;
        uint64_t b = atomic_load_explicit(&s->queued_bytes, memory_order_relaxed) + p->bytes;
        if (q >= c->buf_max_messages || b >= c->buf_max_bytes) {
            atomic_fetch_add(&s->refused, 1);
            w->publish_backlogged = 1;
            return RULES_EMIT_DROPPED;
        }
        if (q >= c->buf_max_messages - c->buf_max_messages / 4 ||
            b >= c->buf_max_bytes - c->buf_max_bytes / 4)
            w->publish_backlogged = 1; /* proto.c pauses the publisher a tick */
    }
    sink_out_t *o = &sw->out;
    o->k.len = o->v.len = o->h.len = 0;
    if (s->drv->render(s, state, row, m, o) < 0) {
        atomic_fetch_add(&s->render_failed, 1);
        return RULES_EMIT_FAILED;
    }
    uint64_t seq = atomic_fetch_add_explicit(&s->next_seq, 1, memory_order_relaxed);
    sink_rec_t *r =
        rec_new(seq, m && m->published_at ? m->published_at : w->wall_ms, o->k.p,
                (uint32_t)o->k.len, o->v.p, (uint32_t)o->v.len, o->h.p, (uint32_t)o->h.len);
    if (persist_on(w)) {
        rec_store(w, s, r);
        if (ack_sink && m && m->qos > 0)
            r->ack = (void *)(((uintptr_t)w->id << ACK_WORKER_SHIFT) |
                              (uintptr_t)persist_sink_ack_emitted(w));
    }
    if (p->tail)
        p->tail->next = r;
    else
        p->head = r;
    p->tail = r;
    p->n++;
    p->bytes += rec_bytes(r);
    module_turn_end_ask(w, &w->srv->modules[st->index]);
    return RULES_EMIT_OK;
}

static void wake_locked(sink_t *s)
{
    if (!s->sleeping)
        return;
    s->sleeping = 0;
    if (s->drv_state)
        s->drv->wake(s, s->drv_state);
    else
        pthread_cond_signal(&s->cond);
}

static void sinks_turn_end(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)w;
    sinks_state_t *st = mi->state;
    sinks_worker_t *sw = ctx;
    for (uint32_t i = 0; i < st->n; i++) {
        pend_t *p = &sw->pend[i];
        if (p->n == 0)
            continue;
        sink_t *s = st->s[i];
        atomic_fetch_add(&s->queued, p->n);
        atomic_fetch_add(&s->queued_bytes, p->bytes);
        atomic_fetch_add(&s->appended, p->n);
        pthread_mutex_lock(&s->mu);
        if (s->in_tail)
            s->in_tail->next = p->head;
        else
            s->in_head = p->head;
        s->in_tail = p->tail;
        wake_locked(s);
        pthread_mutex_unlock(&s->mu);
        memset(p, 0, sizeof(*p));
    }
}

/* ---- dead letters (WM_SINKS) ---- */

static void dl_run(worker_t *w, inbox_item_t *it)
{
    if (it->flags == ITEM_ACKED) {
        persist_sink_ack_done(w, it->sid);
        return;
    }
    msg_t *m = it->ptr;
    router_publish(w, m, NULL);
    msg_unref(&m);
}

static void dl_drop(inbox_item_t *it)
{
    if (it->flags == ITEM_ACKED)
        return;
    msg_t *m = it->ptr;
    msg_unref(&m);
}

static void dead_letter(sink_t *s, const sink_rec_t *r, const char *why)
{
    const char *topic = s->conf->dead_letter_topic;
    if (topic[0] == '\0')
        return;
    if (why == NULL)
        why = "failed";
    size_t wl = strnlen(why, 200);
    uint8_t props[512];
    mqtt_pw_t pw;
    mqtt_pw_init(&pw, props, sizeof(props));
    mqtt_pw_user(&pw, "sink", 4, s->conf->name, strlen(s->conf->name));
    mqtt_pw_user(&pw, "reason", 6, why, wl);
    uint32_t plen = mqtt_pw_error(&pw) ? 0 : (uint32_t)mqtt_pw_len(&pw);
    msg_t *m = msg_new_v5((const uint8_t *)topic, (uint16_t)strlen(topic), props, plen,
                          (const uint8_t *)sink_rec_value(r), r->vlen, 1, 0, 0);
    m->flags |= MSG_F_RULES; /* no rule sees it: no loop */
    m->published_at = an_wall_ms();
    server_t *srv = s->srv;
    inbox_vec_t v = {0};
    inbox_vec_push(&v, &(inbox_item_t){.kind = WM_SINKS, .ptr = m});
    inbox_post(&srv->workers[s->dl_next++ % srv->nworkers].inbox, &v);
    inbox_vec_free(&v);
    STAT_ADD(s->dead_lettered, 1);
}

/* ---- the sink's thread ---- */

static uint64_t backoff_ms(const sink_conf_t *c, uint32_t attempts)
{
    uint64_t b = c->retry_backoff_ms;
    for (uint32_t i = 1; i < attempts && b < c->retry_max_backoff_ms; i++)
        b *= 2;
    return b < c->retry_max_backoff_ms ? b : c->retry_max_backoff_ms;
}

void sink_done(sink_t *s, sink_rec_t *r, int result, const char *why)
{
    STAT_ADD(s->inflight, (uint64_t)-1);
    s->inflight_n--;
    if (result == SINK_OK) {
        uint64_t now = an_wall_ms();
        an_hist_add(&s->latency, now > r->ts_ms ? (now - r->ts_ms) * 1000u : 0);
        STAT_ADD(s->succeeded, 1);
        rec_forget(s, r);
        return;
    }
    if (result == SINK_RETRY && (s->closing || r->attempts < s->conf->retry_max_attempts)) {
        if (!s->closing)
            STAT_ADD(s->retried, 1);
        if (s->nretries == s->cap_retries) {
            s->cap_retries = s->cap_retries ? 2 * s->cap_retries : 16;
            s->retries = an_realloc(s->retries, s->cap_retries * sizeof(*s->retries));
        }
        s->retries[s->nretries++] =
            (retry_t){r, s->closing ? 0 : an_now_ms() + backoff_ms(s->conf, r->attempts)};
        return;
    }
    STAT_ADD(s->failed, 1);
    log_limited(1000, AN_LOG_WARN, "sink %s: record %" PRIu64 " failed after %u attempt(s): %s",
                s->conf->name, r->seq, r->attempts, why ? why : "refused");
    dead_letter(s, r, why);
    rec_forget(s, r);
}

static int seq_before(const sink_rec_t *a, const sink_rec_t *b)
{
    return a->seq < b->seq;
}

/* Retries that are due go back to the front of the queue, in seq order;
 * the time to the next one otherwise (ms, or UINT64_MAX). */
static uint64_t take_retries(sink_t *s, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    sink_rec_t *due = NULL;
    size_t j = 0;
    for (size_t i = 0; i < s->nretries; i++) {
        retry_t *t = &s->retries[i];
        if (t->due <= now) {
            /* insert into `due` sorted by seq */
            sink_rec_t **pp = &due;
            while (*pp && seq_before(*pp, t->rec))
                pp = &(*pp)->next;
            t->rec->next = *pp;
            *pp = t->rec;
        } else {
            if (t->due - now < next)
                next = t->due - now;
            s->retries[j++] = *t;
        }
    }
    s->nretries = j;
    if (due) {
        sink_rec_t *last = due;
        while (last->next)
            last = last->next;
        last->next = s->q_head;
        s->q_head = due;
        if (s->q_tail == NULL)
            s->q_tail = last;
    }
    return next;
}

static void take_intake(sink_t *s)
{
    pthread_mutex_lock(&s->mu);
    sink_rec_t *h = s->in_head, *t = s->in_tail;
    s->in_head = s->in_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    if (h == NULL)
        return;
    if (s->q_tail)
        s->q_tail->next = h;
    else
        s->q_head = h;
    s->q_tail = t;
    if (s->conf->overflow != OVERFLOW_DROP_OLDEST)
        return;
    /* the oldest records not in flight: waiting for a retry, or queued */
    while ((s->q_head || s->nretries) && (atomic_load(&s->queued) > s->conf->buf_max_messages ||
                                          atomic_load(&s->queued_bytes) > s->conf->buf_max_bytes)) {
        size_t old = 0;
        for (size_t i = 1; i < s->nretries; i++)
            if (s->retries[i].rec->seq < s->retries[old].rec->seq)
                old = i;
        sink_rec_t *r;
        if (s->nretries && (s->q_head == NULL || s->retries[old].rec->seq < s->q_head->seq)) {
            r = s->retries[old].rec;
            s->retries[old] = s->retries[--s->nretries];
        } else {
            r = s->q_head;
            s->q_head = r->next;
            if (s->q_head == NULL)
                s->q_tail = NULL;
        }
        STAT_ADD(s->dropped, 1);
        rec_forget(s, r);
    }
}

/* Send what the window allows; the ms until a lingering batch is due (or
 * UINT64_MAX). */
static uint64_t send_ready(sink_t *s, uint64_t now)
{
    const sink_conf_t *c = s->conf;
    sink_rec_t *batch[256];
    /* a record waiting for its retry holds the ones behind it: the order
     * is kept, and a failing destination is not sent more meanwhile */
    while (s->q_head && s->inflight_n < c->max_inflight && s->nretries == 0) {
        size_t n = 0, room = c->max_inflight - s->inflight_n;
        size_t max = c->batch_max < room ? c->batch_max : room;
        if (max > sizeof(batch) / sizeof(batch[0]))
            max = sizeof(batch) / sizeof(batch[0]);
        if (c->linger_ms) { /* wait for a fuller batch, up to linger after the oldest */
            size_t have = 0;
            for (sink_rec_t *r = s->q_head; r && have < max; r = r->next)
                have++;
            uint64_t age = an_wall_ms() - s->q_head->ts_ms;
            if (have < max && age < c->linger_ms)
                return c->linger_ms - age;
        }
        (void)now;
        while (n < max && s->q_head) {
            sink_rec_t *r = s->q_head;
            s->q_head = r->next;
            if (s->q_head == NULL)
                s->q_tail = NULL;
            r->next = NULL;
            r->attempts++;
            batch[n++] = r;
        }
        s->inflight_n += (uint32_t)n;
        STAT_ADD(s->inflight, n);
        STAT_ADD(s->sent, n);
        s->drv->send(s, s->drv_state, batch, n);
    }
    return UINT64_MAX;
}

static void wait_nodrv(sink_t *s, uint64_t ms)
{
    struct timespec ts = an_wall_after(ms);
    pthread_mutex_lock(&s->mu);
    if (!s->stop && s->in_head == NULL) {
        s->sleeping = 1;
        pthread_cond_timedwait(&s->cond, &s->mu, &ts);
        s->sleeping = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

static void *sink_thread(void *arg)
{
    sink_t *s = arg;
    const sink_conf_t *c = s->conf;
    char tname[16];
    snprintf(tname, sizeof(tname), "sink-%.10s", c->name);
    pthread_setname_np(pthread_self(), tname);
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        if (s->drv_state == NULL) {
            char err[256] = "";
            void *d = NULL;
            if (s->drv->open(s, c->drv, &d, err, sizeof(err)) < 0) {
                STAT_ADD(s->open_failures, 1);
                s->open_backoff = s->open_backoff ? s->open_backoff * 2 : c->retry_backoff_ms;
                if (s->open_backoff > c->retry_max_backoff_ms)
                    s->open_backoff = c->retry_max_backoff_ms;
                log_limited(5000, AN_LOG_WARN, "sink %s: cannot open: %s (again in %" PRIu64 " ms)",
                            c->name, err, s->open_backoff);
                take_intake(s);
                flush_deletions(s); /* what drop_oldest dropped meanwhile */
                wait_nodrv(s, s->open_backoff ? s->open_backoff : 100);
                continue;
            }
            s->open_backoff = 0;
            pthread_mutex_lock(&s->mu);
            s->drv_state = d;
            pthread_mutex_unlock(&s->mu);
        }
        uint64_t now = an_now_ms();
        take_intake(s);
        uint64_t t = take_retries(s, now);
        uint64_t l = send_ready(s, now);
        if (l < t)
            t = l;
        flush_deletions(s);
        if (t > 1000)
            t = 1000;
        pthread_mutex_lock(&s->mu);
        int idle =
            s->in_head == NULL && !s->stop &&
            !(s->q_head && s->inflight_n < c->max_inflight && s->nretries == 0 && t == UINT64_MAX);
        s->sleeping = idle;
        pthread_mutex_unlock(&s->mu);
        s->drv->poll(s, s->drv_state, idle ? (int)t : 0);
        pthread_mutex_lock(&s->mu);
        s->sleeping = 0;
        pthread_mutex_unlock(&s->mu);
    }
    /* stop: everything in flight completes with RETRY (stays stored) */
    if (s->drv_state) {
        pthread_mutex_lock(&s->mu);
        void *d = s->drv_state;
        s->drv_state = NULL;
        pthread_mutex_unlock(&s->mu);
        s->closing = 1;
        s->drv->close(s, d);
    }
    flush_deletions(s);
    return NULL;
}

/* ---- actions (sinks.h) ---- */

sink_action_t *sink_action_new(server_t *srv, json_t *def, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(def, "sink"));
    json_t *ack = json_object_get(def, "ack");
    if (name == NULL || name[0] == '\0') {
        snprintf(err, errlen, "sink: the name of a sink (sinks.sinks[].name) is required");
        return NULL;
    }
    const char *ackv = json_string_value(ack);
    if (ack && !(ackv && (strcmp(ackv, "store") == 0 || strcmp(ackv, "sink") == 0))) {
        snprintf(err, errlen, "ack: \"store\" or \"sink\"");
        return NULL;
    }
    sink_action_t *a = an_calloc(1, sizeof(*a));
    a->ack_sink = ackv && strcmp(ackv, "sink") == 0;
    if (srv == NULL)
        return a;
    if (a->ack_sink && srv->store == NULL && srv->conf.persistence_enabled == 0)
        log_warn("sink %s: an action asks for \"ack\": \"sink\" but persistence is off: "
                 "acknowledgements do not wait for the sink",
                 name);
    a->st = state_of(srv);
    a->s = sink_find(a->st, name);
    if (a->s == NULL) {
        snprintf(err, errlen, "sink: no sink named \"%.60s\" (sinks.sinks)", name);
        free(a);
        return NULL;
    }
    json_t *d = json_deep_copy(def);
    json_object_del(d, "type");
    json_object_del(d, "sink");
    json_object_del(d, "ack");
    char e[200] = "";
    int rc = a->s->drv->action_init(a->s, d, &a->state, e, sizeof(e));
    json_decref(d);
    if (rc < 0) {
        snprintf(err, errlen, "%s", e);
        free(a);
        return NULL;
    }
    return a;
}

int sink_action_emit(sink_action_t *a, worker_t *w, json_t *row, const struct msg_s *m)
{
    return emit(a->st, a->s, a->state, a->ack_sink, w, row, m);
}

void sink_action_describe(const sink_action_t *a, json_t *obj)
{
    if (a->s == NULL)
        return;
    json_object_set_new(obj, "sink", json_string(a->s->conf->name));
    json_object_set_new(
        obj, "queued",
        json_integer((json_int_t)atomic_load_explicit(&a->s->queued, memory_order_relaxed)));
}

void sink_action_free(sink_action_t *a)
{
    if (a == NULL)
        return;
    if (a->s && a->s->drv->action_free)
        a->s->drv->action_free(a->state);
    free(a);
}

/* ---- configuration ---- */

static const char *const overflow_names[] = {"drop_oldest", "backpressure", NULL};

static int load_buffer(conf_sec_t *s, void *ud)
{
    sink_conf_t *c = ud;
    return conf_sec_u32(s, "max_messages", 1, 100000000, &c->buf_max_messages) < 0 ||
                   conf_sec_u64(s, "max_bytes", 1024, UINT64_C(1) << 40, &c->buf_max_bytes) < 0 ||
                   conf_sec_enum(s, "overflow", overflow_names, &c->overflow) < 0
               ? -1
               : 0;
}

static int load_batch(conf_sec_t *s, void *ud)
{
    sink_conf_t *c = ud;
    return conf_sec_u32(s, "max_messages", 1, 256, &c->batch_max) < 0 ||
                   conf_sec_ms(s, "linger", 0, 60000, &c->linger_ms) < 0
               ? -1
               : 0;
}

static int load_retry(conf_sec_t *s, void *ud)
{
    sink_conf_t *c = ud;
    return conf_sec_u32(s, "max_attempts", 1, 1000000, &c->retry_max_attempts) < 0 ||
                   conf_sec_ms(s, "backoff", 1, 3600000, &c->retry_backoff_ms) < 0 ||
                   conf_sec_ms(s, "max_backoff", 1, 3600000, &c->retry_max_backoff_ms) < 0
               ? -1
               : 0;
}

static int name_valid(const char *n)
{
    for (const char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return 0;
    return n[0] != '\0';
}

static int load_sink(conf_sec_t *s, uint32_t i, void *ud)
{
    sinks_conf_t *sc = ud;
    if (i >= SINK_MAX)
        return conf_sec_fail(s, "name", "at most %d sinks", SINK_MAX);
    sink_conf_t *c = &sc->s[i];
    memset(c, 0, sizeof(*c));
    c->buf_max_messages = 100000;
    c->buf_max_bytes = 64u << 20;
    c->overflow = OVERFLOW_DROP_OLDEST;
    c->batch_max = 100;
    c->linger_ms = 0;
    c->retry_max_attempts = 10;
    c->retry_backoff_ms = 100;
    c->retry_max_backoff_ms = 10000;
    c->max_inflight = 32;
    const char *types[sizeof(drivers) / sizeof(drivers[0])];
    for (size_t t = 0; t < sizeof(drivers) / sizeof(drivers[0]); t++)
        types[t] = drivers[t] ? drivers[t]->type : NULL;
    if (!conf_sec_has(s, "name"))
        return conf_sec_fail(s, "name", "a sink needs a name");
    if (!conf_sec_has(s, "type"))
        return conf_sec_fail(s, "type", "a sink needs a type");
    if (conf_sec_str(s, "name", c->name, sizeof(c->name), CONF_SEC_NONEMPTY) < 0 ||
        conf_sec_enum(s, "type", types, &c->type) < 0 ||
        conf_sec_map(s, "buffer", load_buffer, c) < 0 ||
        conf_sec_map(s, "batch", load_batch, c) < 0 ||
        conf_sec_map(s, "retry", load_retry, c) < 0 ||
        conf_sec_u32(s, "max_inflight", 1, 100000, &c->max_inflight) < 0 ||
        conf_sec_str(s, "dead_letter_topic", c->dead_letter_topic, sizeof(c->dead_letter_topic),
                     0) < 0)
        return -1;
    if (!name_valid(c->name))
        return conf_sec_fail(s, "name", "letters, digits, '_', '-' and '.' only");
    for (uint32_t j = 0; j < i; j++)
        if (strcmp(sc->s[j].name, c->name) == 0)
            return conf_sec_fail(s, "name", "\"%s\" is the name of an earlier sink", c->name);
    if (c->retry_max_backoff_ms < c->retry_backoff_ms)
        return conf_sec_fail(s, "retry", "max_backoff is shorter than backoff");
    const char *dl = c->dead_letter_topic;
    if (strchr(dl, '+') || strchr(dl, '#'))
        return conf_sec_fail(s, "dead_letter_topic", "\"%s\" has a wildcard", dl);
    const sink_driver_t *d = drivers[c->type];
    if (d->conf_size > sizeof(c->drv)) {
        log_error("sinks: driver %s: its configuration (%zu bytes) is over %d", d->type,
                  d->conf_size, SINK_DRV_CONF_MAX);
        abort(); /* a programming error */
    }
    if (d->conf_load(s, c->drv) < 0)
        return -1;
    sc->n = i + 1;
    return 0;
}

static void sinks_defaults(void *conf)
{
    sinks_conf_t *c = conf;
    c->max_record_bytes = 1u << 20;
}

static int sinks_load(conf_sec_t *s, void *conf)
{
    sinks_conf_t *c = conf;
    c->n = 0;
    return conf_sec_u32(s, "max_record_bytes", 64, 64u << 20, &c->max_record_bytes) < 0 ||
                   conf_sec_each(s, "sinks", load_sink, c) < 0
               ? -1
               : 0;
}

static void sinks_walk(const void *conf, conf_visit_fn fn, void *ud)
{
    const sinks_conf_t *c = conf;
    fn(ud, CONF_V_UINT, "max_record_bytes", NULL, c->max_record_bytes);
    fn(ud, CONF_V_LIST, "sinks", NULL, 0);
    for (uint32_t i = 0; i < c->n; i++) {
        const sink_conf_t *k = &c->s[i];
        fn(ud, CONF_V_ITEM, NULL, NULL, 0);
        fn(ud, CONF_V_STR, "name", k->name, 0);
        fn(ud, CONF_V_STR, "type", drivers[k->type]->type, 0);
        fn(ud, CONF_V_UINT, "buffer.max_messages", NULL, k->buf_max_messages);
        fn(ud, CONF_V_UINT, "buffer.max_bytes", NULL, k->buf_max_bytes);
        fn(ud, CONF_V_STR, "buffer.overflow", overflow_names[k->overflow], 0);
        fn(ud, CONF_V_UINT, "batch.max_messages", NULL, k->batch_max);
        fn(ud, CONF_V_UINT, "batch.linger", NULL, k->linger_ms);
        fn(ud, CONF_V_UINT, "retry.max_attempts", NULL, k->retry_max_attempts);
        fn(ud, CONF_V_UINT, "retry.backoff", NULL, k->retry_backoff_ms);
        fn(ud, CONF_V_UINT, "retry.max_backoff", NULL, k->retry_max_backoff_ms);
        fn(ud, CONF_V_UINT, "max_inflight", NULL, k->max_inflight);
        fn(ud, CONF_V_STR, "dead_letter_topic", k->dead_letter_topic, 0);
        fn(ud, CONF_V_END, NULL, NULL, 0);
    }
    fn(ud, CONF_V_END, "sinks", NULL, 0);
}

/* ---- start-up: the stored records ---- */

static int load_stored(void *ud, const void *k, size_t kl, const void *v, size_t vl)
{
    sink_t *s = ud;
    const uint8_t *p = v;
    if (kl != s->key_len + 8 || vl < SINK_REC_HDR || p[0] != 1)
        return 0; /* another sink's whose name has ours as a prefix, or unreadable */
    uint64_t seq = get_be((const uint8_t *)k + s->key_len, 8);
    uint32_t kn = (uint32_t)get_be(p + 9, 4), vn = (uint32_t)get_be(p + 13, 4),
             hn = (uint32_t)get_be(p + 17, 4);
    if ((uint64_t)SINK_REC_HDR + kn + vn + hn != vl)
        return 0;
    const uint8_t *d = p + SINK_REC_HDR;
    sink_rec_t *r = rec_new(seq, get_be(p + 1, 8), d, kn, d + kn, vn, d + kn + vn, hn);
    if (s->q_tail)
        s->q_tail->next = r;
    else
        s->q_head = r;
    s->q_tail = r;
    atomic_fetch_add(&s->queued, 1);
    atomic_fetch_add(&s->queued_bytes, rec_bytes(r));
    if (seq >= atomic_load(&s->next_seq))
        atomic_store(&s->next_seq, seq + 1);
    return 0;
}

/* ---- module hooks ---- */

static void sink_free_one(sink_t *s)
{
    for (sink_rec_t *r = s->q_head, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    for (sink_rec_t *r = s->in_head, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    for (size_t i = 0; i < s->nretries; i++)
        free(s->retries[i].rec);
    free(s->retries);
    for (uint32_t i = 0; s->acks && i < s->srv->nworkers; i++)
        inbox_vec_free(&s->acks[i]);
    free(s->acks);
    store_batch_free(s->del);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s);
}

static int sinks_init(module_inst_t *mi)
{
    const sinks_conf_t *c = mi->conf;
    if (c->n == 0)
        return 0;
    sinks_state_t *st = an_calloc(1, sizeof(*st));
    st->srv = mi->srv;
    st->conf = c;
    st->index = mi->index;
    mi->state = st;
    worker_inbox_register(mi->srv, WM_SINKS,
                          &(worker_inbox_kind_t){.run = dl_run, .drop = dl_drop});
    for (uint32_t i = 0; i < c->n; i++) {
        sink_t *s = an_calloc(1, sizeof(*s));
        s->srv = mi->srv;
        s->conf = &c->s[i];
        s->drv = drivers[c->s[i].type];
        s->id = i;
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cond, NULL);
        memcpy(s->key, SINK_PREFIX, SINK_PREFIX_LEN);
        size_t nl = strlen(s->conf->name);
        memcpy(s->key + SINK_PREFIX_LEN, s->conf->name, nl);
        s->key[SINK_PREFIX_LEN + nl] = '/';
        s->key_len = SINK_PREFIX_LEN + nl + 1;
        atomic_init(&s->next_seq, 1);
        s->acks = an_calloc(mi->srv->nworkers ? mi->srv->nworkers : 1, sizeof(*s->acks));
        st->s[st->n++] = s;
        if (mi->srv->store) {
            int rc = store_scan(mi->srv->store, s->key, s->key_len, load_stored, s);
            if (rc < 0)
                log_warn("sink %s: reading the stored records: %s", s->conf->name,
                         store_strerror(rc));
        }
        log_info("sink %s (%s): %" PRIu64 " stored record(s) to send", s->conf->name, s->drv->type,
                 atomic_load(&s->queued));
    }
    return 0;
}

static int sinks_worker_init(module_inst_t *mi, worker_t *w, void **ctx)
{
    (void)w;
    sinks_state_t *st = mi->state;
    if (st == NULL)
        return 0;
    sinks_worker_t *sw = an_calloc(1, sizeof(*sw));
    sw->out.max = st->conf->max_record_bytes;
    *ctx = sw;
    return 0;
}

static void sinks_worker_free(module_inst_t *mi, worker_t *w, void *ctx)
{
    (void)w;
    sinks_state_t *st = mi->state;
    sinks_worker_t *sw = ctx;
    if (sw == NULL)
        return;
    for (uint32_t i = 0; st && i < st->n; i++)
        for (sink_rec_t *r = sw->pend[i].head, *n; r; r = n) {
            n = r->next;
            free(r);
        }
    free(sw->out.k.p);
    free(sw->out.v.p);
    free(sw->out.h.p);
    free(sw);
}

static int sinks_start(module_inst_t *mi)
{
    sinks_state_t *st = mi->state;
    for (uint32_t i = 0; st && i < st->n; i++) {
        sink_t *s = st->s[i];
        if (pthread_create(&s->thread, NULL, sink_thread, s) != 0) {
            log_error("sink %s: cannot start its thread", s->conf->name);
            return -1;
        }
        s->started = 1;
    }
    return 0;
}

static void sinks_stop(module_inst_t *mi)
{
    sinks_state_t *st = mi->state;
    for (uint32_t i = 0; st && i < st->n; i++) {
        sink_t *s = st->s[i];
        if (!s->started)
            continue;
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        s->sleeping = 1; /* whatever it does: make it look */
        wake_locked(s);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
        s->started = 0;
    }
}

static void sinks_free(module_inst_t *mi)
{
    sinks_state_t *st = mi->state;
    if (st == NULL)
        return;
    for (uint32_t i = 0; i < st->n; i++)
        sink_free_one(st->s[i]);
    free(st);
    mi->state = NULL;
}

/* ---- API and metrics ---- */

static json_t *sink_json(const sink_t *s)
{
    const sink_conf_t *c = s->conf;
    uint64_t lat_n = 0;
    for (int i = 0; i < AN_HIST_N; i++)
        lat_n += STAT_GET(s->latency.bucket[i]);
    json_t *j = json_pack(
        "{s:s,s:s,s:{s:I,s:I,s:s},s:{s:I,s:I},s:{s:I,s:I,s:I},s:I,s:s}", "name", c->name, "type",
        s->drv->type, "buffer", "max_messages", (json_int_t)c->buf_max_messages, "max_bytes",
        (json_int_t)c->buf_max_bytes, "overflow", overflow_names[c->overflow], "batch",
        "max_messages", (json_int_t)c->batch_max, "linger_ms", (json_int_t)c->linger_ms, "retry",
        "max_attempts", (json_int_t)c->retry_max_attempts, "backoff_ms",
        (json_int_t)c->retry_backoff_ms, "max_backoff_ms", (json_int_t)c->retry_max_backoff_ms,
        "max_inflight", (json_int_t)c->max_inflight, "dead_letter_topic", c->dead_letter_topic);
    json_t *m = json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "queued",
        (json_int_t)atomic_load(&s->queued), "queued_bytes",
        (json_int_t)atomic_load(&s->queued_bytes), "appended",
        (json_int_t)atomic_load(&s->appended), "sent", (json_int_t)STAT_GET(s->sent), "succeeded",
        (json_int_t)STAT_GET(s->succeeded), "retried", (json_int_t)STAT_GET(s->retried), "failed",
        (json_int_t)STAT_GET(s->failed), "dropped", (json_int_t)STAT_GET(s->dropped), "refused",
        (json_int_t)atomic_load(&s->refused), "dead_lettered",
        (json_int_t)STAT_GET(s->dead_lettered), "in_flight", (json_int_t)STAT_GET(s->inflight),
        "render_failed", (json_int_t)STAT_GET(s->render_failed));
    json_object_set_new(
        m, "latency_ms_avg",
        json_real(lat_n ? STAT_GET(s->latency.sum_us) / 1000.0 / (double)lat_n : 0.0));
    json_object_set_new(j, "metrics", m);
    return j;
}

static int api_list(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    (void)req;
    sinks_state_t *st = mi->state;
    json_t *a = json_array();
    for (uint32_t i = 0; st && i < st->n; i++)
        json_array_append_new(a, sink_json(st->s[i]));
    *out = json_pack("{s:o,s:i}", "data", a, "total", (int)json_array_size(a));
    return 200;
}

static int api_one(module_inst_t *mi, const module_api_req_t *req, json_t **out)
{
    sink_t *s = sink_find(mi->state, req->tail);
    if (s == NULL)
        return module_api_error(out, 404, "not_found", "no sink named %.60s", req->tail);
    *out = sink_json(s);
    return 200;
}

static const module_api_route_t sinks_routes[] = {
    {.path = "sinks", .methods = MODULE_API_GET, .fn = api_list},
    {.path = "sinks/", .prefix = 1, .methods = MODULE_API_GET, .fn = api_one},
    {.path = NULL},
};

static void sinks_metrics(module_inst_t *mi, module_metrics_t *mm)
{
    sinks_state_t *st = mi->state;
    if (st == NULL)
        return;
    static const struct {
        const char *name, *type, *help;
    } fams[] = {
        {"antenna_sink_queued", "gauge",
         "Records in a sink's buffer (queued, retrying, in flight)"},
        {"antenna_sink_queued_bytes", "gauge", "Bytes of the records in a sink's buffer"},
        {"antenna_sink_in_flight", "gauge", "Records sent to a sink's driver, not completed"},
        {"antenna_sink_records_total", "counter",
         "Records of a sink by outcome (appended, sent, succeeded, retried, failed, dropped, "
         "refused, dead_lettered, render_failed)"},
    };
    for (int f = 0; f < 3; f++) {
        module_metrics_family(mm, fams[f].name, fams[f].type, fams[f].help);
        for (uint32_t i = 0; i < st->n; i++) {
            const sink_t *s = st->s[i];
            uint64_t v = f == 0   ? atomic_load(&s->queued)
                         : f == 1 ? atomic_load(&s->queued_bytes)
                                  : STAT_GET(s->inflight);
            module_metrics_printf(mm, "%s{sink=\"%s\"} %" PRIu64 "\n", fams[f].name, s->conf->name,
                                  v);
        }
    }
    module_metrics_family(mm, fams[3].name, fams[3].type, fams[3].help);
    for (uint32_t i = 0; i < st->n; i++) {
        const sink_t *s = st->s[i];
        const struct {
            const char *k;
            uint64_t v;
        } rows[] = {{"appended", atomic_load(&s->appended)},
                    {"sent", STAT_GET(s->sent)},
                    {"succeeded", STAT_GET(s->succeeded)},
                    {"retried", STAT_GET(s->retried)},
                    {"failed", STAT_GET(s->failed)},
                    {"dropped", STAT_GET(s->dropped)},
                    {"refused", atomic_load(&s->refused)},
                    {"dead_lettered", STAT_GET(s->dead_lettered)},
                    {"render_failed", STAT_GET(s->render_failed)}};
        for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++)
            module_metrics_printf(
                mm, "antenna_sink_records_total{sink=\"%s\",result=\"%s\"} %" PRIu64 "\n",
                s->conf->name, rows[r].k, rows[r].v);
    }
    module_metrics_family(mm, "antenna_sink_latency_seconds", "histogram",
                          "From a message's publish to the sink's confirmation of its record");
    for (uint32_t i = 0; i < st->n; i++) {
        const sink_t *s = st->s[i];
        uint64_t cum = 0;
        for (int b = 0; b < AN_HIST_N; b++) {
            cum += STAT_GET(s->latency.bucket[b]);
            if (b < AN_HIST_N - 1)
                module_metrics_printf(mm,
                                      "antenna_sink_latency_seconds_bucket{sink=\"%s\",le=\"%g\"} "
                                      "%" PRIu64 "\n",
                                      s->conf->name, an_hist_bounds_us[b] / 1e6, cum);
            else
                module_metrics_printf(
                    mm,
                    "antenna_sink_latency_seconds_bucket{sink=\"%s\",le=\"+Inf\"} "
                    "%" PRIu64 "\n",
                    s->conf->name, cum);
        }
        module_metrics_printf(mm, "antenna_sink_latency_seconds_sum{sink=\"%s\"} %.6f\n",
                              s->conf->name, STAT_GET(s->latency.sum_us) / 1e6);
        module_metrics_printf(mm, "antenna_sink_latency_seconds_count{sink=\"%s\"} %" PRIu64 "\n",
                              s->conf->name, cum);
    }
    /* the drivers' families: each header once, then every sink's lines
     * of it (the lines of a family must stay together) */
    for (int d = 0; drivers[d]; d++) {
        const sink_driver_t *drv = drivers[d];
        for (const sink_metric_family_t *f = drv->metric_families; drv->metrics && f && f->name;
             f++) {
            int header = 0;
            for (uint32_t i = 0; i < st->n; i++) {
                sink_t *s = st->s[i];
                if (s->drv != drv)
                    continue;
                if (!header) {
                    module_metrics_family(mm, f->name, f->type, f->help);
                    header = 1;
                }
                /* the driver's state is the thread's; read it under mu so
                 * it is not closed meanwhile */
                pthread_mutex_lock(&s->mu);
                if (s->drv_state)
                    drv->metrics(s, s->drv_state, f->name, mm);
                pthread_mutex_unlock(&s->mu);
            }
        }
    }
}

const module_t sinks_module = {
    .name = "sinks",
    .section = "sinks",
    .conf_size = sizeof(sinks_conf_t),
    .conf_defaults = sinks_defaults,
    .conf_load = sinks_load,
    .conf_walk = sinks_walk,
    .init = sinks_init,
    .start = sinks_start,
    .stop = sinks_stop,
    .free = sinks_free,
    .worker_init = sinks_worker_init,
    .worker_free = sinks_worker_free,
    .turn_end = sinks_turn_end,
    .api_routes = sinks_routes,
    .metrics = sinks_metrics,
};
