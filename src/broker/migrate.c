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
#include "util.h"

typedef struct migrate_want_s {
    uint64_t sid;
    uint32_t to;
    uint64_t since; /* w->now when wanted: kept while busy, MIGRATE_WANT_MS */
} migrate_want_t;

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
    if (w->nmigs == w->migs_cap) {
        w->migs_cap = w->migs_cap ? w->migs_cap * 2 : 16;
        w->migs = an_realloc(w->migs, w->migs_cap * sizeof(*w->migs));
    }
    w->migs[w->nmigs++] = (migrate_want_t){s->sid, to, w->now};
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

/* Session s on w, with its MQTT connection: can both leave now? */
static conn_t *movable(worker_t *w, sess_t *s)
{
    if (s->ep == NULL || s->ep->ops != &ep_mqtt_ops || s->nsubs != 0 || sq_len(&s->inflight) != 0 ||
        sq_len(&s->queue) != 0 || (s->x && (s->x->timer_kind != SESS_TIMER_NONE || s->x->will)))
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
    sess_table_del(&w->by_id, s);
    sess_table_del(&w->by_sid, s);
    uint64_t h = an_siphash(srv->home_key, s->client_id, s->client_id_len);
    s->moved = (uint32_t)(h % srv->nworkers) != want->to;
    s->mig_hold = MIGRATE_HOLD;
    STAT_ADD(w->stats.migrations, 1);
    inbox_vec_t one = {0};
    inbox_vec_push(&one, &(inbox_item_t){.kind = WM_MIGRATE, .ptr = c});
    /* the new home and the item together: whoever reads the new home posts
     * behind the session */
    pthread_rwlock_wrlock(&srv->homes->lock);
    home_set_locked(srv, h, s->client_id, s->client_id_len, want->to);
    inbox_post(&srv->workers[want->to].inbox, &one);
    pthread_rwlock_unlock(&srv->homes->lock);
    inbox_vec_free(&one);
    return 0;
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
    worker_inbox_register(srv, WM_MIGRATE, &k);
}
