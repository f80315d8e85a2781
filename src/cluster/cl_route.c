/* cl_route.c -- route sharing and retained messages across nodes
 * (cl_link_int.h; docs/cluster.md "Routes", "Retained messages").
 *
 * Local routes: the trie tells (trie_set_local_hook, under its write lock,
 * from whichever thread subscribes) when a filter gets its first MQTT
 * subscriber on this node and when it loses its last one; each change is
 * posted, in order, to the link thread, which keeps the wildcard and
 * shared ones (L->local, whole strings) and counts the exact ones
 * (L->own_exact: the trie has them), and encodes ROUTE_ADD / ROUTE_DEL
 * into every link that is up; after the run of tasks, cl_route_marks
 * appends the ROUTE_MARK and writes each link once (a SUBSCRIBE storm: one
 * write per link per run, not per route; runs closer than CL_MARK_GAP_MS
 * share one).  A link that comes up gets the whole set between SYNC_BEGIN
 * and SYNC_END: L->local, and the exact filters read from the trie
 * (trie_walk_exact_local) as of change c->sync_seq, which may be ahead of
 * the changes applied here: the exact ones up to it are not sent to that
 * link again when they come (a second ADD would count twice there).  Above
 * cluster.route_bloom_above exact filters, a peer that asked for them so
 * gets the exact ones as a bit filter instead (cl_bits.c: the whole bitmap
 * in the sync, then the flipped positions before each ROUTE_MARK).  Internal
 * consumers and other nodes' routes are not local subscribers (other
 * kinds), so they are never announced.
 *
 * Remote routes: per peer the set it announced.  Wildcard and shared
 * filters (p->routes, whole strings) are mirrored into the trie as
 * subscribers of kind ROUTE_OWNER_NODE (router_node_subscribe); a sync
 * marks what it names with a new generation and SYNC_END removes what it
 * did not name.  Exact filters, the bulk (a device's own topic), are not
 * kept here at all, only counted (p->nexact): the router keeps their
 * 64-bit hashes, in its exact table (rtab.h: a count per (hash, node),
 * 16-24 B a route) while the peer has at most cluster.route_bloom_above
 * of them, else in a counting Bloom filter of the peer's (rbloom.h: 8 B a
 * route when built, 4 B when it has doubled).  A sync notes the hashes it
 * names (p->sync_h while they are few enough for the table, p->sync_bloom
 * a new filter past that, both for the sync only) and SYNC_END swaps them
 * in at once
 * (a new filter or the peer's pairs of the table, under one write lock),
 * so a peer that rejoins replaces its stale routes without a moment with
 * none.  A filter built from deltas or a sync is rebuilt by asking the
 * peer for a full sync (ROUTE_RESYNC) when its routes doubled (the false
 * positive bound) or fell to a quarter (the memory bound), or few enough
 * for the exact table.  A peer that ships its exact routes as a bit
 * filter (cl_bits.c) has them in the router as its bits: this file only
 * swaps a sync's bitmap in at SYNC_END.  A node that leaves loses all of
 * them.
 *
 * Retained messages: a link that comes up sends its whole retained set
 * (not $SYS); the receiver keeps the newer of its own and the peer's copy
 * of a topic (publish time, then the name of the node it was published
 * on) and hands the winner to a worker (retain_set, persist_retained).
 * A clear made while the link was down is carried by tombstones
 * (cl_tomb.c), sent after the retained set.
 */
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_link_int.h"
#include "log.h"
#include "retain.h"
#include "router.h"
#include "rbits.h"
#include "rbloom.h"

/* ---- a set of filters ---- */

typedef struct cl_fent_s {
    struct cl_fent_s *next;
    uint32_t hash, gen;
    uint16_t len;
    uint8_t f[];
} cl_fent_t;

struct cl_fset_s {
    cl_fent_t **b;
    size_t nb, n;
    uint64_t key[2];
};

static cl_fset_t *fset_new(void)
{
    cl_fset_t *s = an_calloc(1, sizeof(*s));
    s->nb = 64;
    s->b = an_calloc(s->nb, sizeof(*s->b));
    an_random_key(s->key);
    return s;
}

static uint32_t fset_hash(const cl_fset_t *s, const uint8_t *f, size_t len)
{
    uint64_t h = an_siphash(s->key, f, len);
    return (uint32_t)(h ^ (h >> 32));
}

static cl_fent_t **fset_slot(cl_fset_t *s, const uint8_t *f, size_t len, uint32_t h)
{
    cl_fent_t **pp = &s->b[h & (s->nb - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->f, f, len) == 0))
        pp = &(*pp)->next;
    return pp;
}

/* The entry of f, added when absent (*added = 1). */
static cl_fent_t *fset_add(cl_fset_t *s, const uint8_t *f, size_t len, int *added)
{
    uint32_t h = fset_hash(s, f, len);
    cl_fent_t **pp = fset_slot(s, f, len, h);
    *added = *pp == NULL;
    if (*pp)
        return *pp;
    if (s->n >= s->nb) { /* grow: load 1 */
        size_t nb = s->nb * 2;
        cl_fent_t **b = an_calloc(nb, sizeof(*b));
        for (size_t i = 0; i < s->nb; i++)
            for (cl_fent_t *e = s->b[i], *next; e; e = next) {
                next = e->next;
                e->next = b[e->hash & (nb - 1)];
                b[e->hash & (nb - 1)] = e;
            }
        free(s->b);
        s->b = b;
        s->nb = nb;
        pp = fset_slot(s, f, len, h);
    }
    cl_fent_t *e = an_malloc(sizeof(*e) + len);
    e->next = NULL;
    e->hash = h;
    e->gen = 0;
    e->len = (uint16_t)len;
    memcpy(e->f, f, len);
    *pp = e;
    s->n++;
    return e;
}

static int fset_del(cl_fset_t *s, const uint8_t *f, size_t len)
{
    cl_fent_t **pp = fset_slot(s, f, len, fset_hash(s, f, len));
    cl_fent_t *e = *pp;
    if (e == NULL)
        return 0;
    *pp = e->next;
    free(e);
    s->n--;
    return 1;
}

/* Remove every entry for which drop(e) says 1 (NULL: all). */
static void fset_sweep(cl_fset_t *s, int (*drop)(cl_fent_t *e, void *ud), void *ud)
{
    for (size_t i = 0; i < s->nb; i++)
        for (cl_fent_t **pp = &s->b[i]; *pp;) {
            cl_fent_t *e = *pp;
            if (drop == NULL || drop(e, ud)) {
                *pp = e->next;
                free(e);
                s->n--;
            } else {
                pp = &e->next;
            }
        }
}

static void fset_free(cl_fset_t *s)
{
    if (s == NULL)
        return;
    fset_sweep(s, NULL, NULL);
    free(s->b);
    free(s);
}

static void sync_clear(cl_peer_t *p);

/* ---- local routes ---- */

typedef struct {
    uint64_t seq; /* L->route_posted when the hook made it */
    int up;
    uint16_t len;
    uint8_t f[];
} local_change_t;

static void local_apply(cl_t *cl, void *arg)
{
    local_change_t *ch = arg;
    cl_links_t *L = cl->links;
    int changed;
    if (L == NULL) { /* posted after the thread ended, run by cl_free */
        free(ch);
        return;
    }
    uint64_t h;
    int exact = router_route_exact(cl->srv, ch->f, ch->len, &h) == 1;
    if (exact)
        changed = 1; /* the hook alternates up and down for a filter */
    else if (ch->up)
        (void)fset_add(L->local, ch->f, ch->len, &changed);
    else
        changed = fset_del(L->local, ch->f, ch->len);
    L->route_applied = ch->seq;
    L->mark_due = 1; /* cl_route_marks, after this run of tasks */
    cl_route_work(cl, 1);
    if (changed && exact) /* the owner's count and counters (cl_bits.c) */
        cl_bits_local(cl, ch->up, h, ch->seq);
    CL_STAT_SET(cl->local_routes, L->local->n + L->own_exact);
    if (changed && !atomic_load(&cl->stopping)) {
        /* written by cl_route_marks after this run of tasks, with its
         * ROUTE_MARK: one write per link for all the run's changes (a link
         * that takes our exact routes as bits gets them there; one whose
         * sync waits for the peer's first frame gets them with it; an
         * exact change its sync read from the trie already is not sent
         * again: a second ADD would count the route twice there) */
        for (cl_conn_t *c = L->conns; c; c = c->next)
            if (c->up && !c->route_wait &&
                !(exact && (cl_bits_out(cl, c) || ch->seq <= c->sync_seq)))
                cl_enc_route(&c->out, ch->up ? CL_F_ROUTE_ADD : CL_F_ROUTE_DEL, ch->f, ch->len);
    }
    free(ch);
}

/* The trie's hook: under its write lock, on any thread. */
static void local_hook(void *ud, const uint8_t *filter, size_t len, int up)
{
    cl_t *cl = ud;
    if (len > UINT16_MAX)
        return;
    local_change_t *ch = an_malloc(sizeof(*ch) + len);
    /* under the trie's write lock: numbered in the order they are posted */
    ch->seq = atomic_fetch_add(&cl->links->route_posted, 1) + 1;
    ch->up = up;
    ch->len = (uint16_t)len;
    memcpy(ch->f, filter, len);
    if (cl_post(cl, local_apply, ch) < 0)
        free(ch);
}

void cl_route_init(cl_t *cl)
{
    cl_bits_init(cl); /* the cluster's route key first */
    cl->links->local = fset_new();
    router_set_local_hook(cl->srv, local_hook, cl);
}

void cl_route_free(cl_t *cl)
{
    cl_links_t *L = cl->links;
    router_set_local_hook(cl->srv, NULL, NULL);
    fset_free(L->local);
    L->local = NULL;
    cl_bits_free(cl);
    for (int i = 0; i < CL_MAX_NODES; i++) {
        fset_free(L->peers[i].routes); /* the trie goes with the server */
        L->peers[i].routes = NULL;
        sync_clear(&L->peers[i]); /* its exact routes go with the server */
        L->peers[i].nexact = L->peers[i].bloom_sized = 0;
        free(L->peers[i].shares);
        L->peers[i].shares = NULL;
        L->peers[i].nshares = L->peers[i].cap_shares = 0;
    }
}

/* trie_walk_exact_local's callback of a sync: each filter as a
 * ROUTE_ADD ("$share/..." and invalid ones are no trie keys of this kind:
 * they would be in L->local) */
static void sync_exact_one(void *ud, const uint8_t *f, size_t len, int up)
{
    cl_conn_t *c = ud;
    uint64_t h;
    (void)up;
    if (len <= UINT16_MAX && router_route_exact(c->cl->srv, f, len, &h) == 1)
        cl_enc_route(&c->out, CL_F_ROUTE_ADD, f, len);
}

void cl_route_sync(cl_t *cl, cl_conn_t *c)
{
    cl_links_t *L = cl->links;
    cl_fset_t *s = L->local;
    cl_enc_empty(&c->out, CL_F_SYNC_BEGIN);
    for (size_t i = 0; i < s->nb; i++)
        for (cl_fent_t *e = s->b[i]; e; e = e->next)
            cl_enc_route(&c->out, CL_F_ROUTE_ADD, e->f, e->len);
    if (cl_bits_out(cl, c)) /* the exact filters as one bitmap */
        cl_bits_sync(cl, c);
    else /* as strings, from the trie: the changes up to c->sync_seq */
        router_walk_exact_local(cl->srv, sync_exact_one, c, &L->route_posted, &c->sync_seq);
    cl_enc_empty(&c->out, CL_F_SYNC_END);
    cl_enc_u64(&c->out, CL_F_ROUTE_MARK, L->route_applied);
}

static void own_exact_one(void *ud, const uint8_t *f, size_t len, int up)
{
    void **x = ud; /* {cl, rbcount} */
    cl_t *cl = x[0];
    uint32_t flips[RBITS_K];
    uint64_t h;
    (void)up;
    if (len <= UINT16_MAX && router_route_exact(cl->srv, f, len, &h) == 1)
        (void)rbcount_add(x[1], h, flips);
}

uint64_t cl_route_local_exact(cl_t *cl, rbcount_t *c)
{
    void *x[2] = {cl, c};
    uint64_t at;
    router_walk_exact_local(cl->srv, own_exact_one, x, &cl->links->route_posted, &at);
    return at;
}

uint64_t cl_route_count(const cl_peer_t *p)
{
    return (p->routes ? p->routes->n : 0) + p->nexact;
}

/* ---- the route barrier ---- */

/* route_done = the lowest ROUTE_MARK answered by a peer whose link is up
 * (route_applied when none is up); when it moved, one CL_IT_ROUTES item to
 * every worker (the SUBACKs held there, proto.c). */
void cl_route_recompute(cl_t *cl)
{
    cl_links_t *L = cl->links;
    uint64_t done = L->route_applied;
    for (int i = 1; i < CL_MAX_NODES; i++) {
        const cl_peer_t *p = &L->peers[i];
        if (p->conn != NULL && p->conn->up && p->route_acked < done)
            done = p->route_acked;
    }
    if (done <= atomic_load(&L->route_done))
        return;
    atomic_store(&L->route_done, done);
    for (uint32_t i = 0; i < L->nworkers; i++) {
        inbox_item_t it = {.kind = WM_CLUSTER, .flags = CL_IT_ROUTES, .sid = done};
        inbox_vec_push(&L->outv[i], &it);
    }
    cl_recv_flush(cl);
    if (L->mark_due && done >= L->mark_sent) /* the changes held for these answers: */
        tw_add(&cl->tw, &L->mark_timer, 0);  /* cl_route_marks on the next tick */
}

/* After a run of tasks that changed local routes: one ROUTE_MARK on each
 * link that is up.  At most every CL_MARK_GAP_MS: under a storm of
 * SUBSCRIBEs (a node of a big cluster while its devices connect, ~150 new
 * routes a second) the changes of several runs go in one write per link,
 * one mark and one ROUTE_ACKED each (the SUBACKs wait that much longer);
 * a lone change after a quiet gap goes at once.  And while some peer has
 * not answered the last mark, the next waits for its answers
 * (cl_route_recompute calls back), CL_MARK_HOLD_MS at most: the rounds
 * are clocked by the slowest peer's answers, which a SUBACK waits for
 * anyway, so with 52 peers under a storm a round carries the changes of
 * all the runs the last one took, not of 20 ms (each round is a write, a
 * wake-up and a read on every link, and an answer back). */
void cl_route_marks(cl_t *cl)
{
    cl_links_t *L = cl->links;
    if (L == NULL || !L->mark_due)
        return;
    uint64_t now = an_now_ms(); /* cl->now may be a whole poll old */
    uint64_t due = L->mark_last + CL_MARK_GAP_MS;
    if (atomic_load(&L->route_done) < L->mark_sent)
        due = L->mark_last + CL_MARK_HOLD_MS;
    if (now < due && !atomic_load(&cl->stopping)) {
        if (!tw_pending(&L->mark_timer) || L->mark_timer.expires > due)
            tw_add(&cl->tw, &L->mark_timer, due);
        return;
    }
    L->mark_last = now;
    L->mark_sent = L->route_applied;
    L->mark_due = 0;
    STAT_ADD(cl->route_marks, 1);
    for (cl_conn_t *c = L->conns, *next; c; c = next) {
        next = c->next;
        if (c->up && !c->route_wait) { /* a waiting one gets them with its sync */
            cl_bits_mark(cl, c);       /* the run's bit changes, before its mark */
            cl_enc_u64(&c->out, CL_F_ROUTE_MARK, L->route_applied);
            if (!(c->ev.events & EV_WRITE))
                cl_conn_flush(cl, c);
        }
    }
    cl_bits_marks_done(cl);
    cl_route_recompute(cl); /* no link up: done at once */
}

void cl_route_marks_timer(tw_timer_t *t)
{
    cl_links_t *L = (cl_links_t *)((char *)t - offsetof(cl_links_t, mark_timer));
    cl_route_marks(L->cl);
}

/* A storm of route changes (every node's devices connecting) leaves the
 * link thread's arena, and the worker's that posted the changes, with
 * holes of what it allocated for a while: the peers' bitmaps and the
 * owner's counters at each size they passed through, the links' grown
 * buffers, the tasks.  Their pages stay resident until malloc is asked
 * (~100 B a device on a node of 20).  Once CL_TRIM_ROUTES changes came
 * since the last trim and a tick saw fewer than 1/16 of that:
 * malloc_trim(0), a few ms once a storm. */
void cl_route_work(cl_t *cl, uint64_t n)
{
    cl_links_t *L = cl->links;
    L->route_work += n;
    if (!tw_pending(&L->trim_timer))
        tw_add(&cl->tw, &L->trim_timer, cl->now + CL_TRIM_MS);
}

void cl_route_trim_timer(tw_timer_t *t)
{
    cl_links_t *L = (cl_links_t *)((char *)t - offsetof(cl_links_t, trim_timer));
    cl_t *cl = L->cl;
    uint64_t recent = L->route_work - L->trim_seen;
    L->trim_seen = L->route_work;
    if (recent >= CL_TRIM_ROUTES / 16) { /* still coming */
        tw_add(&cl->tw, &L->trim_timer, cl->now + CL_TRIM_MS);
        return;
    }
    if (L->route_work - L->trim_work >= CL_TRIM_ROUTES) {
        malloc_trim(0);
        L->trim_work = L->route_work;
        STAT_ADD(cl->route_trims, 1);
    }
}

void cl_route_acked(cl_t *cl, cl_peer_t *p, uint64_t v)
{
    if (v > p->route_acked) {
        p->route_acked = v;
        cl_route_recompute(cl);
    }
}

void cl_route_progress(cl_t *cl, uint64_t *posted, uint64_t *done)
{
    cl_links_t *L = cl->links;
    *posted = L ? atomic_load_explicit(&L->route_posted, memory_order_acquire) : 0;
    *done = L ? atomic_load_explicit(&L->route_done, memory_order_acquire) : 0;
}

uint64_t cl_route_barrier(worker_t *w, uint32_t *wait_ms, void *user)
{
    (void)w;
    cl_links_t *L = ((cl_t *)user)->links;
    *wait_ms = CL_ROUTE_WAIT_MS;
    uint64_t posted = atomic_load_explicit(&L->route_posted, memory_order_acquire);
    return posted > atomic_load_explicit(&L->route_done, memory_order_acquire) ? posted : 0;
}

/* ---- remote routes ---- */

/* A peer's "$share/g/f" routes by tag (router_share_tag): a forwarded
 * message names its groups by tag until the link thread writes the frame. */
struct cl_share_s {
    uint32_t tag;
    cl_fent_t *e;
};

static int is_share(const uint8_t *f, size_t len)
{
    return len > 7 && memcmp(f, "$share/", 7) == 0;
}

static struct cl_share_s *share_find(cl_peer_t *p, uint32_t tag)
{
    for (uint32_t i = 0; i < p->nshares; i++)
        if (p->shares[i].tag == tag)
            return &p->shares[i];
    return NULL;
}

static void share_forget(cl_peer_t *p, const cl_fent_t *e)
{
    for (uint32_t i = 0; i < p->nshares; i++)
        if (p->shares[i].e == e) {
            p->shares[i] = p->shares[--p->nshares];
            return;
        }
}

const uint8_t *cl_route_share(cl_peer_t *p, uint32_t tag, uint16_t *len)
{
    struct cl_share_s *s = share_find(p, tag);
    *len = s ? s->e->len : 0;
    return s ? s->e->f : NULL;
}

typedef struct {
    cl_t *cl;
    int idx;
    uint32_t keep_gen; /* drop entries of other generations; 0: all */
} sweep_ctx_t;

static int sweep_one(cl_fent_t *e, void *ud)
{
    sweep_ctx_t *x = ud;
    if (x->keep_gen != 0 && e->gen == x->keep_gen)
        return 0;
    if (is_share(e->f, e->len))
        share_forget(&x->cl->links->peers[x->idx], e);
    router_node_unsubscribe(x->cl->srv, (uint16_t)x->idx, e->f, e->len);
    return 1;
}

static void bloom_stat(cl_t *cl, int idx)
{
    size_t bytes;
    uint64_t sized;
    router_node_exact_info(cl->srv, (uint16_t)idx, &bytes, &sized);
    CL_STAT_SET(cl->lstats[idx].bloom_bytes, bytes);
}

/* The peer's filter no longer fits its routes (doubled since it was
 * built, or down to a quarter, or few enough for the exact table): ask it
 * for a full sync, once per sync (a peer that does not know the frame
 * ignores it: its filter then fills past its bound, see docs/cluster.md
 * "Routes"). */
static void exact_check(cl_t *cl, cl_peer_t *p, int idx)
{
    uint64_t above = cl->conf->route_bloom_above, n = p->nexact;
    if (p->syncing || p->bits) /* its owner sizes its bits */
        return;
    if (p->bloom_sized == 0) {
        if (above != 0 && n > above) { /* the exact table holds them until now */
            uint64_t sized = AN_MAX(n, (uint64_t)RBLOOM_MIN_ROUTES);
            router_node_exact_to_bloom(cl->srv, (uint16_t)idx, sized);
            p->bloom_sized = sized;
            bloom_stat(cl, idx);
        }
        return;
    }
    int grown = n > 2 * p->bloom_sized;
    int shrunk = (n * 4 < p->bloom_sized && p->bloom_sized > RBLOOM_MIN_ROUTES) ||
                 (above != 0 && n * 2 < above);
    if ((grown || shrunk) && !p->resync_asked && p->conn != NULL && p->conn->up) {
        p->resync_asked = 1;
        cl_enc_empty(&p->conn->out, CL_F_ROUTE_RESYNC);
        CL_STAT_ADD(cl->lstats[idx].resyncs, 1);
    }
}

static void sync_clear(cl_peer_t *p)
{
    free(p->sync_h); /* a sync's buffers live for the sync only */
    p->sync_h = NULL;
    rbloom_free(p->sync_bloom);
    p->sync_bloom = NULL;
    rbits_free(p->sync_bits);
    p->sync_bits = NULL;
    p->sync_n = p->sync_cap = p->sync_kept = 0;
    p->sync_over = 0;
}

/* SYNC_BEGIN: a peer known to have more exact routes than the table takes
 * (a resync we asked for, a link back up) gets its new filter at once,
 * sized for what it had; the hashes are kept too while they are few
 * enough for the table. */
static void exact_sync_begin(cl_t *cl, cl_peer_t *p)
{
    uint64_t above = cl->conf->route_bloom_above;
    sync_clear(p);
    if (above != 0 && p->nexact > above && !p->bits) /* bits: they come as bits again */
        p->sync_bloom = rbloom_new(p->nexact);
}

/* During a sync: note h (ADD) or forget it (DEL: not sent inside a sync,
 * which is written at once, but handled). */
static void exact_sync_note(cl_t *cl, cl_peer_t *p, uint8_t type, uint64_t h)
{
    uint64_t above = cl->conf->route_bloom_above;
    if (type == CL_F_ROUTE_DEL) {
        int found = 0;
        for (size_t i = p->sync_kept; i-- > 0 && !found;)
            if (p->sync_h[i] == h) {
                p->sync_h[i] = p->sync_h[--p->sync_kept];
                found = 1;
            }
        if (p->sync_bloom != NULL) /* holds every hash of this sync */
            found = rbloom_del(p->sync_bloom, h);
        if (found && p->sync_n > 0)
            p->sync_n--;
        return;
    }
    p->sync_n++;
    if (p->sync_bloom != NULL)
        rbloom_add(p->sync_bloom, h);
    if (p->sync_over)
        return;
    if (above != 0 && p->sync_n > above) { /* the table will not take them */
        /* sized for twice the table: if that is short, SYNC_END asks
         * again and the next sync is sized right */
        if (p->sync_bloom == NULL) {
            p->sync_bloom = rbloom_new(2 * (uint64_t)above);
            for (size_t i = 0; i < p->sync_kept; i++)
                rbloom_add(p->sync_bloom, p->sync_h[i]);
            rbloom_add(p->sync_bloom, h);
        }
        free(p->sync_h);
        p->sync_h = NULL;
        p->sync_kept = p->sync_cap = 0;
        p->sync_over = 1;
        return;
    }
    if (p->sync_kept == p->sync_cap) {
        p->sync_cap = p->sync_cap ? p->sync_cap * 2 : 256;
        p->sync_h = an_realloc(p->sync_h, p->sync_cap * sizeof(*p->sync_h));
    }
    p->sync_h[p->sync_kept++] = h;
}

/* SYNC_END: the exact filters named since SYNC_BEGIN replace the peer's
 * (the stale ones go): the new Bloom filter when there were more than
 * cluster.route_bloom_above, else the hashes into the exact table. */
static void exact_sync_end(cl_t *cl, cl_peer_t *p, int idx)
{
    if (p->sync_bits != NULL) { /* its exact routes came as one bitmap */
        cl_bits_sync_end(cl, p, idx);
        sync_clear(p);
        return;
    }
    p->bits = 0; /* strings now: the replace drops its bits */
    CL_STAT_SET(cl->lstats[idx].bits_in, 0);
    if (p->sync_over) {
        rbloom_t *b = p->sync_bloom;
        p->sync_bloom = NULL;
        p->bloom_sized = b->sized;
        router_node_exact_replace(cl->srv, (uint16_t)idx, b, NULL, 0);
    } else {
        router_node_exact_replace(cl->srv, (uint16_t)idx, NULL, p->sync_h, p->sync_kept);
        p->bloom_sized = 0;
    }
    p->nexact = p->sync_n;
    bloom_stat(cl, idx);
    sync_clear(p);
}

/* ROUTE_ADD / ROUTE_DEL of an exact filter of hash h.  During a sync the
 * hash is only noted (SYNC_END swaps the set in); else it goes to the
 * router at once.  Two filters with one hash (a 64-bit collision) count
 * twice, so the route stays until both are gone. */
static void exact_recv(cl_t *cl, cl_peer_t *p, int idx, uint8_t type, uint64_t h)
{
    if (p->syncing) {
        exact_sync_note(cl, p, type, h);
        return;
    }
    if (type == CL_F_ROUTE_ADD) {
        router_node_exact(cl->srv, (uint16_t)idx, h, ROUTER_EXACT_ADD);
        p->nexact++;
    } else if (router_node_exact(cl->srv, (uint16_t)idx, h, ROUTER_EXACT_DEL) && p->nexact > 0) {
        p->nexact--;
    }
    exact_check(cl, p, idx);
}

int cl_route_recv(cl_t *cl, cl_peer_t *p, uint8_t type, const uint8_t *body, uint32_t len)
{
    int idx = (int)(p - cl->links->peers);
    if (p->routes == NULL)
        p->routes = fset_new();
    cl_route_work(cl, 1);
    if (type == CL_F_SYNC_BEGIN) {
        p->syncing = 1;
        p->resync_asked = 0;
        exact_sync_begin(cl, p);
        if (++p->sync_gen == 0)
            p->sync_gen = 1;
        return 0;
    }
    if (type == CL_F_SYNC_END) {
        sweep_ctx_t x = {cl, idx, p->sync_gen};
        fset_sweep(p->routes, sweep_one, &x);
        if (p->syncing) {
            exact_sync_end(cl, p, idx);
            p->syncing = 0;
            exact_check(cl, p, idx); /* sized short (a peer that grew while away)? */
        }
        CL_STAT_SET(cl->lstats[idx].routes, p->routes->n + p->nexact);
        return 0;
    }
    const uint8_t *f;
    uint16_t fl;
    uint64_t h;
    if (cl_dec_route(body, len, &f, &fl) < 0 || fl == 0)
        return -1;
    int exact = router_route_exact(cl->srv, f, fl, &h);
    if (exact < 0) {
        if (type == CL_F_ROUTE_ADD)
            log_limited(10000, AN_LOG_WARN, "cluster: %s announced an invalid filter (%u bytes)",
                        cl->nodes[idx].name, fl);
        goto out;
    }
    if (exact == 1) {
        exact_recv(cl, p, idx, type, h);
        goto out;
    }
    if (type == CL_F_ROUTE_ADD) {
        int added;
        cl_fent_t *e = fset_add(p->routes, f, fl, &added);
        e->gen = p->sync_gen;
        if (added && is_share(f, fl)) {
            uint32_t tag = router_share_tag(f, fl);
            if (share_find(p, tag) != NULL) { /* two groups, one tag: the later is ignored */
                log_limited(10000, AN_LOG_WARN,
                            "cluster: %s announced two shared groups with one tag: '%.*s' ignored",
                            cl->nodes[idx].name, (int)AN_MIN(fl, 200u), (const char *)f);
                fset_del(p->routes, f, fl);
                goto out;
            }
            if (p->nshares == p->cap_shares) {
                p->cap_shares = p->cap_shares ? p->cap_shares * 2 : 8;
                p->shares = an_realloc(p->shares, p->cap_shares * sizeof(*p->shares));
            }
            p->shares[p->nshares++] = (struct cl_share_s){tag, e};
        }
        if (added && router_node_subscribe(cl->srv, (uint16_t)idx, f, fl) < 0) {
            log_limited(10000, AN_LOG_WARN, "cluster: %s announced an invalid filter (%u bytes)",
                        cl->nodes[idx].name, fl);
            if (is_share(f, fl))
                share_forget(p, e);
            fset_del(p->routes, f, fl);
        }
    } else {
        cl_fent_t **pp = fset_slot(p->routes, f, fl, fset_hash(p->routes, f, fl));
        if (*pp != NULL && is_share(f, fl))
            share_forget(p, *pp);
        if (fset_del(p->routes, f, fl))
            router_node_unsubscribe(cl->srv, (uint16_t)idx, f, fl);
    }
out:
    CL_STAT_SET(cl->lstats[idx].routes, p->routes->n + p->nexact);
    return 0;
}

void cl_route_drop_peer(cl_t *cl, cl_peer_t *p)
{
    int idx = (int)(p - cl->links->peers);
    if (p->routes) {
        sweep_ctx_t x = {cl, idx, 0};
        fset_sweep(p->routes, sweep_one, &x);
    }
    router_node_exact_replace(cl->srv, (uint16_t)idx, NULL, NULL, 0);
    p->nexact = p->bloom_sized = 0;
    p->bits = 0;
    CL_STAT_SET(cl->lstats[idx].bits_in, 0);
    CL_STAT_SET(cl->lstats[idx].bloom_bytes, 0);
    p->syncing = 0;
    sync_clear(p);
    CL_STAT_SET(cl->lstats[idx].routes, 0);
}

/* A member that left and whose sessions may be adopted keeps its other
 * routes for a while (cl_hand.c); its shared groups' picks go to the other
 * members at once. */
static int sweep_share(cl_fent_t *e, void *ud)
{
    return is_share(e->f, e->len) && sweep_one(e, ud);
}

void cl_route_drop_peer_shares(cl_t *cl, cl_peer_t *p)
{
    int idx = (int)(p - cl->links->peers);
    if (p->routes) {
        sweep_ctx_t x = {cl, idx, 0};
        fset_sweep(p->routes, sweep_share, &x);
        CL_STAT_SET(cl->lstats[idx].routes, p->routes->n + p->nexact);
    }
}

/* ---- retained messages ---- */

const char *cl_retained_origin(cl_t *cl, const msg_t *m)
{
    if (m->origin_node > 0 && m->origin_node < CL_MAX_NODES && cl->nodes[m->origin_node].used)
        return cl->nodes[m->origin_node].name;
    return cl->conf->node;
}

typedef struct {
    cl_t *cl;
    cl_conn_t *c;
} rsync_ctx_t;

static void rsync_one(void *ud, msg_t *m)
{
    rsync_ctx_t *x = ud;
    uint64_t now = an_now_ms();
    if (!router_is_sys_topic(msg_topic(m), m->topic_len) && !msg_expired(m, now)) {
        const char *o = cl_retained_origin(x->cl, m);
        cl_msg_t w = cl_msg_of(m, now);
        w.flags = CL_MSG_RETAIN;
        w.origin = o;
        w.origin_len = (uint8_t)strlen(o);
        cl_enc_msg(&x->c->out, CL_F_RETAINED, &w);
    }
    msg_unref(&m);
}

void cl_retained_sync(cl_t *cl, cl_conn_t *c)
{
    rsync_ctx_t x = {cl, c};
    retain_walk(cl->srv->retain, (const uint8_t *)"", 0, rsync_one, &x);
}

static void keep_first(void *ud, msg_t *m)
{
    msg_t **out = ud;
    if (*out == NULL)
        *out = m;
    else
        msg_unref(&m);
}

int cl_retained_recv(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len)
{
    cl_msg_t x;
    if (cl_dec_msg(body, len, &x) < 0 || x.topic_len == 0 || x.payload_len == 0 ||
        memchr(x.topic, '+', x.topic_len) || memchr(x.topic, '#', x.topic_len))
        return -1;
    char oname[CL_NAME_MAX];
    snprintf(oname, sizeof(oname), "%.*s", (int)x.origin_len, x.origin);
    /* cleared here (or on a third node) after this copy was published */
    if (cl_tomb_covers(cl, x.topic, x.topic_len, x.published_at, oname))
        return 0;
    msg_t *mine = NULL;
    retain_match(cl->srv->retain, x.topic, x.topic_len, keep_first, &mine);
    if (mine != NULL) {
        int theirs_newer = x.published_at > mine->published_at ||
                           (x.published_at == mine->published_at &&
                            strcmp(oname, cl_retained_origin(cl, mine)) > 0);
        msg_unref(&mine);
        if (!theirs_newer)
            return 0;
    }
    int idx = (int)(p - cl->links->peers);
    int onode = strcmp(oname, cl->conf->node) == 0 ? 0 : cl_node_index(cl, oname);
    uint64_t expire = x.expiry_ms ? an_now_ms() + x.expiry_ms : 0;
    msg_t *m = msg_new_v5(x.topic, x.topic_len, x.props, x.props_len, x.payload, x.payload_len,
                          x.qos, 1, expire);
    m->published_at = x.published_at;
    m->origin_node = (uint16_t)(onode < 0 ? idx : onode);
    m->hops = 1;
    cl_tomb_set(cl, x.topic, x.topic_len, x.published_at, oname);
    cl_recv_post(cl, 0, m, CL_IT_RETAIN);
    return 0;
}
