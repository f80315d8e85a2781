/* migrate.c -- a connection moves to the worker its traffic goes to.
 *
 * See migrate.h for the model: counters per publish in the session's
 * padding, a decision per window of MIGRATE_WINDOW messages, the move at
 * the end of the old worker's turn (after its outbox posts), the adoption
 * by the new worker from its inbox (WM_MIGRATE), and the table of client
 * ids homed away from their hash (server_t.homes, a rwlock: read by any
 * thread, written on a move and when a moved session ends).
 */
#include "migrate.h"

#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "ep_mqtt.h"
#include "log.h"
#include "router.h"
#include "trie.h"
#include "util.h"

typedef struct migrate_want_s {
    uint64_t sid;
    uint32_t to;
    uint64_t since; /* w->now when wanted: kept while busy, MIGRATE_WANT_MS */
} migrate_want_t;

/* A subscriber that moved out (the old worker's side of the fence): its
 * stragglers are handed on to `to`; DONE once every other worker
 * acknowledged `epoch`, kept MIGRATE_FENCE_GRACE_MS after. */
typedef struct migrate_fence_s {
    uint64_t sid;
    uint32_t to;
    uint32_t epoch;
    uint64_t done_at; /* ms; 0 while the acknowledgements are awaited */
} migrate_fence_t;

typedef struct home_ent_s {
    struct home_ent_s *next;
    uint64_t h; /* an_siphash(home_key) of the id */
    uint32_t worker;
    uint16_t len;
    char id[];
} home_ent_t;

typedef struct migrate_homes_s {
    pthread_rwlock_t lock;
    home_ent_t **buckets;
    size_t nbuckets, count;
} migrate_homes_t;

/* ---- the decision ------------------------------------------------------ */

static void want(worker_t *w, uint64_t sid, uint32_t to);
static void rehome_subs(server_t *srv, sess_t *s, uint32_t to);

int migrate_decide(uint32_t n, uint32_t k, uint32_t to, uint32_t self, uint32_t nworkers)
{
    if (n == 0 || k == 0 || to == self || to >= nworkers)
        return 0;
    return (uint64_t)k * 100u >= (uint64_t)n * MIGRATE_SHARE;
}

void migrate_window(worker_t *w, sess_t *s)
{
    uint32_t n = s->mig_n, k = s->mig_k, to = s->mig_to;
    s->mig_n = s->mig_k = 0;
    if (s->mig_hold) {
        s->mig_hold--;
        return;
    }
    if (!w->mig_on || s->nsubs != 0 || !migrate_decide(n, k, to, w->id, w->srv->nworkers))
        return;
    if (to != 0 && atomic_load_explicit(&w->srv->consolidated, memory_order_relaxed))
        return; /* everything goes to worker 0 meanwhile (the sweep) */
    want(w, s->sid, to);
}

static void want(worker_t *w, uint64_t sid, uint32_t to)
{
    if (w->nmigs == w->migs_cap) {
        w->migs_cap = w->migs_cap ? w->migs_cap * 2 : 16;
        w->migs = an_realloc(w->migs, w->migs_cap * sizeof(*w->migs));
    }
    w->migs[w->nmigs++] = (migrate_want_t){sid, to, w->now};
}

/* ---- the home table ---------------------------------------------------- */

int migrate_init(server_t *srv)
{
    if (!srv->conf.workers_migrate || srv->nworkers < 2)
        return 0;
    migrate_homes_t *t = an_calloc(1, sizeof(*t));
    if (pthread_rwlock_init(&t->lock, NULL) != 0) {
        free(t);
        return -1;
    }
    srv->homes = t;
    return 0;
}

void migrate_free(server_t *srv)
{
    migrate_homes_t *t = srv->homes;
    if (t == NULL)
        return;
    for (size_t b = 0; b < t->nbuckets; b++)
        while (t->buckets[b]) {
            home_ent_t *e = t->buckets[b];
            t->buckets[b] = e->next;
            free(e);
        }
    free(t->buckets);
    pthread_rwlock_destroy(&t->lock);
    free(t);
    srv->homes = NULL;
    atomic_store(&srv->nhomes, 0);
}

static home_ent_t **find_slot(migrate_homes_t *t, uint64_t h, const void *id, size_t len)
{
    if (t->nbuckets == 0)
        return NULL;
    home_ent_t **pp = &t->buckets[an_hash64(h) & (t->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->h == h && (*pp)->len == len && memcmp((*pp)->id, id, len) == 0)
            return pp;
    return pp; /* the end of the chain: *pp == NULL */
}

uint32_t migrate_home(const server_t *srv, uint64_t h, const uint8_t *id, size_t len)
{
    migrate_homes_t *t = srv->homes;
    uint32_t home = (uint32_t)(h % srv->nworkers);
    pthread_rwlock_rdlock(&t->lock);
    home_ent_t **pp = find_slot(t, h, id, len);
    if (pp && *pp)
        home = (*pp)->worker;
    pthread_rwlock_unlock(&t->lock);
    return home;
}

static void grow(migrate_homes_t *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    home_ent_t **b = an_calloc(n, sizeof(*b));
    for (size_t i = 0; i < t->nbuckets; i++)
        while (t->buckets[i]) {
            home_ent_t *e = t->buckets[i];
            t->buckets[i] = e->next;
            size_t j = an_hash64(e->h) & (n - 1);
            e->next = b[j];
            b[j] = e;
        }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

/* Under the write lock: id's home is `worker` (its hash home: no entry). */
static void home_set_locked(server_t *srv, uint64_t h, const char *id, uint16_t len,
                            uint32_t worker)
{
    migrate_homes_t *t = srv->homes;
    int by_hash = (uint32_t)(h % srv->nworkers) == worker;
    home_ent_t **pp = find_slot(t, h, id, len);
    if (pp && *pp) {
        if (by_hash) {
            home_ent_t *e = *pp;
            *pp = e->next;
            free(e);
            t->count--;
        } else {
            (*pp)->worker = worker;
        }
    } else if (!by_hash) {
        if (t->count + 1 > t->nbuckets)
            grow(t);
        home_ent_t *e = an_malloc(sizeof(*e) + len);
        e->h = h;
        e->worker = worker;
        e->len = len;
        memcpy(e->id, id, len);
        size_t j = an_hash64(h) & (t->nbuckets - 1);
        e->next = t->buckets[j];
        t->buckets[j] = e;
        t->count++;
    }
    atomic_store_explicit(&srv->nhomes, (uint32_t)t->count, memory_order_release);
}

void migrate_home_drop(server_t *srv, const sess_t *s)
{
    migrate_homes_t *t = srv->homes;
    if (t == NULL)
        return;
    uint64_t h = an_siphash(srv->home_key, s->client_id, s->client_id_len);
    pthread_rwlock_wrlock(&t->lock);
    home_ent_t **pp = find_slot(t, h, s->client_id, s->client_id_len);
    if (pp && *pp && (*pp)->worker == s->w->id) /* not a newer home's entry */
        home_set_locked(srv, h, s->client_id, s->client_id_len, (uint32_t)(h % srv->nworkers));
    pthread_rwlock_unlock(&t->lock);
}

void migrate_home_claim(server_t *srv, sess_t *s)
{
    uint64_t h = an_siphash(srv->home_key, s->client_id, s->client_id_len);
    if ((uint32_t)(h % srv->nworkers) == s->w->id)
        return;
    s->moved = 1;
    pthread_rwlock_wrlock(&srv->homes->lock);
    home_set_locked(srv, h, s->client_id, s->client_id_len, s->w->id);
    pthread_rwlock_unlock(&srv->homes->lock);
}

/* ---- the move ------------------------------------------------------------ */

/* A subscriber may move (consolidation) when nothing else keeps its worker
 * index: no shared group (a member entry of its own, shared.h), not durable
 * (held-for-commit deliveries name its worker: persist.h), not an adopted
 * session deduplicating (cl_adopt.c), no fence of a move still open. */
static int subs_movable(const server_t *srv, const sess_t *s)
{
    if (!srv->conf.workers_consolidate || s->fenced || s->adopt_dedup || s->stored ||
        (atomic_load_explicit(&s->shared_flags, memory_order_relaxed) & SESS_F_DURABLE))
        return 0;
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i].len >= 7 && memcmp(s->subs[i].filter, "$share/", 7) == 0)
            return 0;
    return 1;
}

/* Session s on w, with its MQTT connection: can both leave now? */
static conn_t *movable(worker_t *w, sess_t *s)
{
    if (s->ep == NULL || s->ep->ops != &ep_mqtt_ops || s->fenced ||
        (s->nsubs != 0 && !subs_movable(w->srv, s)) ||
        (s->x && (s->x->timer_kind == SESS_TIMER_EXPIRY || s->x->will)))
        return NULL;
    /* messages in flight or queued go along, unless the store has records
     * of them: their deletes must follow their writes in one worker's
     * batches (persist.h) */
    if ((sq_len(&s->inflight) != 0 || sq_len(&s->queue) != 0) &&
        (s->stored ||
         (atomic_load_explicit(&s->shared_flags, memory_order_relaxed) & SESS_F_DURABLE)))
        return NULL;
    conn_t *c = container_of(s->ep, conn_t, ep);
    if (c->w != w || c->sess != s || !conn_movable(c))
        return NULL;
    return c;
}

/* 1 when the session is still wanted elsewhere but busy now (asked again
 * at the end of the next turns); 0 when moved or gone. */
static int move_one(worker_t *w, const migrate_want_t *want)
{
    server_t *srv = w->srv;
    sess_t *s = worker_find_sid(w, want->sid);
    if (s == NULL) /* ended, or moved (a second wish for it) */
        return 0;
    conn_t *c = movable(w, s);
    if (c == NULL)
        return 1; /* busy: an acknowledgement held for a commit, output... */
    conn_move_out(c);
    sess_timer_move_out(s); /* messages in flight and queued go along */
    sess_table_del(&w->by_id, s);
    sess_table_del(&w->by_sid, s);
    uint64_t h = an_siphash(srv->home_key, s->client_id, s->client_id_len);
    s->moved = (uint32_t)(h % srv->nworkers) != want->to;
    s->mig_hold = MIGRATE_HOLD;
    STAT_ADD(w->stats.migrations, 1);
    inbox_vec_t one = {0};
    inbox_vec_push(&one, &(inbox_item_t){.kind = WM_MIGRATE, .ptr = c});
    uint32_t nsubs = s->nsubs;
    if (nsubs != 0) { /* a subscriber: its routes name the new worker (fence_open) */
        migrate_fence_open(w, s->sid, want->to);
        s->fenced = 1;
        pthread_rwlock_wrlock(&srv->trie_lock);
        rehome_subs(srv, s, want->to);
    }
    /* the new home and the item together: whoever reads the new home posts
     * behind the session */
    pthread_rwlock_wrlock(&srv->homes->lock);
    home_set_locked(srv, h, s->client_id, s->client_id_len, want->to);
    inbox_post(&srv->workers[want->to].inbox, &one);
    pthread_rwlock_unlock(&srv->homes->lock);
    if (nsubs != 0)
        pthread_rwlock_unlock(&srv->trie_lock);
    inbox_vec_free(&one);
    return 0;
}

/* ---- a subscriber's fence ------------------------------------------------
 *
 * Deliveries to a session name its worker (sub_ref_t.owner, in the trie).
 * When a subscriber moves, its routes are changed under the trie's write
 * lock together with the post of WM_MIGRATE, so a delivery matched after
 * the change is posted behind the session.  One matched before it may
 * still be on its way to the old worker (in another worker's outbox, or
 * in ours): the old worker hands those on (DLV_HANDED, in the order they
 * come), and the new one holds what comes directly until the old says
 * that no straggler can follow (DONE).  That is when every other worker
 * has answered an ASK posted after the change: a worker appends its
 * deliveries to its outbox when it matches them, and its answer when it
 * takes the ASK, so whatever it matched before the change is ahead of the
 * answer (inboxes are FIFO per producer).  A publisher's order is kept:
 * its messages matched before the change come first, through the old
 * worker; those after it wait on the new one until DONE. */

static void rehome_subs(server_t *srv, sess_t *s, uint32_t to) /* under trie_lock (write) */
{
    for (uint32_t i = 0; i < s->nsubs; i++) {
        const sess_sub_t *sub = &s->subs[i];
        sub_ref_t ref = {.sid = s->sid,
                         .subid = sub->subid,
                         .owner = (uint16_t)to,
                         .opts = (uint8_t)(sub->opts & 0x3f),
                         .kind = ROUTE_OWNER_LOCAL,
                         .sess = s};
        (void)trie_insert(srv->trie, sub->filter, sub->len, &ref); /* replaces: 0 */
    }
}

void migrate_fence_open(worker_t *w, uint64_t sid, uint32_t to)
{
    if (w->nfences == w->fences_cap) {
        w->fences_cap = w->fences_cap ? w->fences_cap * 2 : 16;
        w->fences = an_realloc(w->fences, w->fences_cap * sizeof(*w->fences));
    }
    w->fences[w->nfences++] = (migrate_fence_t){sid, to, w->fence_epoch + 1, 0};
    w->fence_moved++;
}

static void fence_post(worker_t *w, uint32_t to, uint8_t what, uint64_t sid)
{
    inbox_item_t it = {.kind = WM_FENCE, .qos = what, .flags = (uint8_t)w->id, .sid = sid};
    worker_post(w, to, &it);
}

void migrate_fence_ask(worker_t *w)
{
    server_t *srv = w->srv;
    w->fence_moved = 0;
    w->fence_epoch++;
    if (w->fence_acked == NULL)
        w->fence_acked = an_calloc(srv->nworkers, sizeof(*w->fence_acked));
    inbox_vec_t one = {0};
    const inbox_item_t ask = {
        .kind = WM_FENCE, .qos = MIGRATE_FENCE_ASK, .flags = (uint8_t)w->id, .sid = w->fence_epoch};
    for (uint32_t i = 0; i < srv->nworkers; i++)
        if (i != w->id) {
            /* inbox_post empties the batch and may swap its storage for
             * the inbox's (none at all for an inbox never posted to): the
             * item is pushed again for each worker */
            inbox_vec_push(&one, &ask);
            inbox_post(&srv->workers[i].inbox, &one);
        }
    inbox_vec_free(&one);
}

/* Worker `from` answered `epoch`: DONE for every fence all have passed. */
static void fence_acked(worker_t *w, uint32_t from, uint32_t epoch)
{
    if (w->fence_acked == NULL || from >= w->srv->nworkers)
        return;
    w->fence_acked[from] = epoch;
    uint32_t least = UINT32_MAX;
    for (uint32_t i = 0; i < w->srv->nworkers; i++)
        if (i != w->id && w->fence_acked[i] < least)
            least = w->fence_acked[i];
    for (uint32_t i = 0; i < w->nfences; i++) {
        migrate_fence_t *f = &w->fences[i];
        if (f->done_at == 0 && f->epoch <= least) {
            fence_post(w, f->to, MIGRATE_FENCE_DONE, f->sid);
            f->done_at = w->now ? w->now : 1;
        }
    }
}

/* The new worker: the old one's stragglers are all here; what waited goes. */
static void fence_done(worker_t *w, uint64_t sid)
{
    sess_t *s = worker_find_sid(w, sid);
    if (s)
        s->fenced = 0;
    size_t kept = 0;
    inbox_vec_t *v = &w->fence_held;
    for (size_t i = 0; i < v->len; i++) {
        inbox_item_t *it = &v->items[i];
        if (it->sid != sid) {
            v->items[kept++] = *it;
            continue;
        }
        msg_t *m = it->ptr;
        if (s)
            router_deliver_local(w, sid, m, it->qos, it->flags);
        msg_unref(&m);
    }
    v->len = kept;
    if (kept == 0 && v->cap > 256)
        inbox_vec_free(v);
}

int migrate_fence_hold(worker_t *w, sess_t *s, msg_t *m, uint8_t qos, uint8_t flags)
{
    (void)s;
    if (flags & DLV_HANDED) /* matched before the move: its turn is now */
        return 0;
    inbox_vec_push(
        &w->fence_held,
        &(inbox_item_t){
            .kind = WM_DELIVER, .qos = qos, .flags = flags, .sid = s->sid, .ptr = msg_ref(m)});
    STAT_ADD(w->stats.fence_held, 1);
    return 1;
}

void migrate_hold_early(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos, uint8_t flags)
{
    inbox_vec_push(
        &w->fence_held,
        &(inbox_item_t){
            .kind = WM_DELIVER, .qos = qos, .flags = flags, .sid = sid, .ptr = msg_ref(m)});
    STAT_ADD(w->stats.fence_held, 1);
}

/* Every look: a held delivery whose session is here and not fenced goes
 * (it came another way than a move: nothing will release it); one whose
 * session is not here is marked (kind WM_FENCE), and dropped at the next
 * look if still alone (the session ended before it arrived). */
static void held_sweep(worker_t *w)
{
    inbox_vec_t *v = &w->fence_held;
    size_t kept = 0;
    for (size_t i = 0; i < v->len; i++) {
        inbox_item_t it = v->items[i];
        sess_t *s = worker_find_sid(w, it.sid);
        if (s == NULL && it.kind == WM_DELIVER) {
            it.kind = WM_FENCE;
            v->items[kept++] = it;
            continue;
        }
        if (s != NULL && s->fenced) {
            v->items[kept++] = it;
            continue;
        }
        msg_t *m = it.ptr;
        if (s != NULL)
            sess_deliver(w, s, m, it.qos, (uint8_t)(it.flags & ~DLV_HANDED));
        msg_unref(&m);
    }
    v->len = kept;
}

int migrate_hand_stray(worker_t *w, uint64_t sid, msg_t *m, uint8_t qos, uint8_t flags)
{
    for (uint32_t i = 0; i < w->nfences; i++)
        if (w->fences[i].sid == sid) {
            inbox_item_t it = {.kind = WM_DELIVER,
                               .qos = qos,
                               .flags = (uint8_t)(flags | DLV_HANDED),
                               .sid = sid,
                               .ptr = msg_ref(m)};
            worker_post(w, w->fences[i].to, &it);
            STAT_ADD(w->stats.fence_handed, 1);
            return 1;
        }
    return 0;
}

static void fences_expire(worker_t *w)
{
    uint32_t kept = 0;
    for (uint32_t i = 0; i < w->nfences; i++)
        if (w->fences[i].done_at == 0 || w->now - w->fences[i].done_at < MIGRATE_FENCE_GRACE_MS)
            w->fences[kept++] = w->fences[i];
    w->nfences = kept;
    if (kept == 0 && w->fences_cap > 64) {
        free(w->fences);
        w->fences = NULL;
        w->fences_cap = 0;
    }
}

static void run_fence(worker_t *w, inbox_item_t *it)
{
    switch (it->qos) {
    case MIGRATE_FENCE_ASK: /* behind whatever we matched for the asker before */
        fence_post(w, it->flags, MIGRATE_FENCE_ACK, it->sid);
        break;
    case MIGRATE_FENCE_ACK:
        fence_acked(w, it->flags, (uint32_t)it->sid);
        break;
    case MIGRATE_FENCE_DONE:
        fence_done(w, it->sid);
        break;
    }
}

/* ---- consolidation --------------------------------------------------------- */

int migrate_consol_decide(int consolidated, uint32_t pct, uint32_t below, uint32_t above,
                          uint8_t *votes)
{
    if (consolidated) {
        *votes = 0;
        return pct > above ? 0 : 1;
    }
    if (pct >= below) {
        *votes = 0;
        return 0;
    }
    if (*votes < 255)
        (*votes)++;
    return *votes >= MIGRATE_CONSOL_VOTES;
}

/* Worker 0, every MIGRATE_CONSOL_MS: the busy time of all workers since the
 * last look, as a percentage of one core, decides the mode. */
static void consol_decide(worker_t *w)
{
    server_t *srv = w->srv;
    uint64_t busy = 0;
    for (uint32_t i = 0; i < srv->nworkers; i++)
        busy += atomic_load_explicit(&srv->workers[i].busy_us, memory_order_relaxed);
    uint64_t d = busy - srv->consol_last_busy;
    srv->consol_last_busy = busy;
    uint32_t pct = (uint32_t)AN_MIN(d / (MIGRATE_CONSOL_MS * 10u), 100000u);
    int was = atomic_load_explicit(&srv->consolidated, memory_order_relaxed);
    int now = migrate_consol_decide(was, pct, srv->conf.workers_consolidate_below,
                                    srv->conf.workers_consolidate_above, &srv->consol_votes);
    if (now == was || w->now - srv->consol_since < MIGRATE_CONSOL_DWELL_MS)
        return;
    atomic_store_explicit(&srv->consolidated, (uint8_t)now, memory_order_relaxed);
    srv->consol_since = w->now;
    STAT_ADD(w->stats.consol_changes, 1);
    log_debug("workers: %s (%u %% of a core)", now ? "consolidated on worker 0" : "spread", pct);
}

/* Every worker, every MIGRATE_CONSOL_MS: while consolidated, its connected
 * sessions are wanted on worker 0; while spread, the subscribers that
 * consolidation took away from their hash home go back (publishers follow
 * their deliveries by locality).  A few thousand sessions looked at per
 * sweep, from where the last one stopped. */
static void consol_sweep(worker_t *w)
{
    server_t *srv = w->srv;
    int cons = atomic_load_explicit(&srv->consolidated, memory_order_relaxed);
    sess_table_t *t = &w->by_sid;
    if (t->count == 0 || (cons && w->id == 0) ||
        (!cons && atomic_load_explicit(&srv->nhomes, memory_order_relaxed) == 0))
        return;
    size_t looked = 0, wanted = 0, b = w->consol_cursor % t->nbuckets;
    for (size_t n = 0;
         n < t->nbuckets && looked < MIGRATE_CONSOL_LOOK && wanted < MIGRATE_CONSOL_BATCH;
         n++, b = (b + 1) % t->nbuckets) {
        for (sess_t *s = t->buckets[b]; s; s = s->sid_next) {
            looked++;
            /* only what could move (movable's lasting conditions): a want
             * that never moves would be tried at every end of turn */
            if (s->ep == NULL || s->ep->ops != &ep_mqtt_ops || s->fenced || (s->x && s->x->will) ||
                (s->nsubs != 0 && !subs_movable(srv, s)))
                continue;
            if (cons) {
                want(w, s->sid, 0);
                wanted++;
            } else if (s->moved && s->nsubs != 0) {
                uint64_t h = an_siphash(srv->home_key, s->client_id, s->client_id_len);
                want(w, s->sid, (uint32_t)(h % srv->nworkers));
                wanted++;
            }
        }
    }
    w->consol_cursor = b;
}

static void on_consol_timer(tw_timer_t *t)
{
    worker_t *w = container_of(t, worker_t, consol_timer);
    if (w->id == 0)
        consol_decide(w);
    consol_sweep(w);
    if (w->nfences)
        fences_expire(w);
    if (w->fence_held.len)
        held_sweep(w);
    tw_add(&w->tw, t, w->now + MIGRATE_CONSOL_MS);
}

void migrate_worker_start(worker_t *w)
{
    server_t *srv = w->srv;
    if (srv->homes == NULL || !srv->conf.workers_consolidate)
        return;
    if (w->id == 0) { /* an idle broker starts consolidated */
        atomic_store_explicit(&srv->consolidated, 1, memory_order_relaxed);
        srv->consol_since = w->now;
    }
    tw_timer_init(&w->consol_timer, on_consol_timer);
    tw_add(&w->tw, &w->consol_timer, w->now + MIGRATE_CONSOL_MS);
}

void migrate_worker_free(worker_t *w)
{
    for (size_t i = 0; i < w->fence_held.len; i++) {
        msg_t *m = w->fence_held.items[i].ptr;
        msg_unref(&m);
    }
    inbox_vec_free(&w->fence_held);
    free(w->fences);
    free(w->fence_acked);
}

void migrate_run(worker_t *w)
{
    uint32_t n = w->nmigs, kept = 0;
    w->nmigs = 0;
    if (w->srv->homes == NULL)
        return;
    /* a wish that finds its connection busy stays for the next turns, up to
     * MIGRATE_WANT_MS: a publisher whose acknowledgements wait for store
     * commits is busy at the end of most turns while it sends, idle only
     * once they are out (a turn the commit's completion makes) */
    for (uint32_t i = 0; i < n; i++)
        if (move_one(w, &w->migs[i]) && w->now - w->migs[i].since < MIGRATE_WANT_MS)
            w->migs[kept++] = w->migs[i];
    w->nmigs = kept;
    if (w->fence_moved)
        migrate_fence_ask(w);
    if (kept == 0 && w->migs_cap > 1024) { /* a burst is over: give it back */
        free(w->migs);
        w->migs = NULL;
        w->migs_cap = 0;
    }
}

int migrate_hand_on(worker_t *w, const char *id, size_t len, const inbox_item_t *it)
{
    server_t *srv = w->srv;
    if (srv->homes == NULL)
        return 0;
    uint32_t to = worker_home(srv, (const uint8_t *)id, len);
    if (to == w->id)
        return 0;
    inbox_vec_t one = {0};
    inbox_vec_push(&one, it);
    inbox_post(&srv->workers[to].inbox, &one);
    inbox_vec_free(&one);
    STAT_ADD(w->stats.migrate_handed, 1);
    return 1;
}

void migrate_adopt(worker_t *w, conn_t *c)
{
    sess_t *s = c->sess;
    s->w = w;
    sess_table_add(&w->by_id, s);
    sess_table_add(&w->by_sid, s);
    sess_timer_move_in(s);
    conn_move_in(w, c);
}

static void run_migrate(worker_t *w, inbox_item_t *it)
{
    migrate_adopt(w, it->ptr);
}

/* Left in a stopped worker's inbox: the client is gone, the session with
 * it (its records stay in the store, as at any stop). */
static void drop_migrate(inbox_item_t *it)
{
    conn_t *c = it->ptr;
    close(c->ev.fd);
    sess_free_detached(c->sess);
    c->sess = NULL;
    conn_free(c);
}

void migrate_register_inbox(server_t *srv)
{
    static const worker_inbox_kind_t k = {.run = run_migrate, .drop = drop_migrate};
    static const worker_inbox_kind_t f = {.run = run_fence};
    worker_inbox_register(srv, WM_MIGRATE, &k);
    worker_inbox_register(srv, WM_FENCE, &f);
}
