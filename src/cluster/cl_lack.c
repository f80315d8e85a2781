/* cl_lack.c -- a forwarded QoS 1/2 message is acknowledged on the link only
 * once this node's store has it (docs/cluster.md "QoS across nodes").
 *
 * Without a store the link thread acknowledges what it read (cl_recv_ack:
 * in_seen).  With one, a node killed between that ACK and the commit of the
 * batch holding the message's queue entries would lose a message whose
 * publisher, elsewhere, already got its PUBACK.  So the link thread numbers
 * what it hands to each worker (cl_peer_t.lk: the last sequence posted to
 * worker i, and the last one i reported done) and acknowledges the highest
 * sequence below which every worker is done (cl_lack_value).
 *
 * Workers.  The worker routes the message (run_cluster); when that wrote
 * to its store batch (a durable subscriber's queue entry), or an earlier
 * message of this ring still waits, it holds a "link acknowledgement" in
 * the store's held ring (persist_hold_ack on the worker's link endpoint,
 * cl_lack_t.ep), released with the commit like a local publisher's PUBACK
 * (persist.h's release rule); else it is done at once.  What is done is
 * gathered per peer during the turn and posted to the link thread once at
 * the end of the turn (cl_lack_turn_end: one cl_post).  The ring of held
 * sequence numbers is the worker's own; released in order (the held ring's
 * order), so a worker's reports per peer only grow.
 *
 * A commit that failed releases its link acknowledgement too (the message
 * is lost as a local publisher's would be, but the sender is not kept
 * waiting for ever).  Sequence numbers are packed with the peer's
 * generation (cl_peer_t.lk_gen, bumped when the peer's process changes):
 * a report about an earlier process is ignored.
 */
#include <stdlib.h>
#include <string.h>

#include "cl_link_int.h"
#include "endpoint.h"
#include "module.h"
#include "persist.h"

typedef struct {
    uint64_t v; /* CL_LACK_PACK(gen, seq) */
    uint16_t peer;
} cl_lack_item_t;

struct cl_lack_s {
    endpoint_t ep; /* first: the held acknowledgements come back here */
    cl_t *cl;
    worker_t *w;
    cl_lack_item_t *v; /* held, in order; ring, cap a power of two */
    size_t head, len, cap;
    uint64_t done[CL_MAX_NODES]; /* reported at the turn's end; 0: nothing */
    uint16_t touched[CL_MAX_NODES];
    uint32_t ntouched;
};

/* What the worker posts to the link thread at the end of a turn. */
typedef struct {
    uint32_t w, n;
    struct {
        uint64_t v;
        uint16_t peer;
    } e[];
} cl_lack_rep_t;

static void note_done(cl_lack_t *L, uint16_t peer, uint64_t v)
{
    peer &= CL_MAX_NODES - 1;
    if (L->done[peer] == 0)
        L->touched[L->ntouched++] = peer;
    L->done[peer] = v;
    module_turn_end_ask(L->w, &L->w->srv->modules[L->cl->mod_index]);
}

/* endpoint ops: only ack is ever called (persist's release) */
static void lack_ack(endpoint_t *ep, uint8_t type, uint16_t pid, uint8_t reason, unsigned flags)
{
    (void)type, (void)pid, (void)reason, (void)flags;
    cl_lack_t *L = (cl_lack_t *)ep;
    if (L->len == 0)
        return;
    cl_lack_item_t it = L->v[L->head];
    L->head = (L->head + 1) & (L->cap - 1);
    L->len--;
    note_done(L, it.peer, it.v);
}

static int lack_deliver(endpoint_t *ep, const msg_t *m, uint8_t qos, uint8_t retain, uint8_t dup,
                        uint16_t pid, const uint32_t *subids, uint32_t nsubids)
{
    (void)ep, (void)m, (void)qos, (void)retain, (void)dup, (void)pid, (void)subids, (void)nsubids;
    return 0;
}

static void lack_close(endpoint_t *ep, ep_close_t why, const char *text)
{
    (void)ep, (void)why, (void)text;
}

static size_t lack_backlog(const endpoint_t *ep)
{
    (void)ep;
    return 0;
}

static void lack_describe(const endpoint_t *ep, ep_info_t *out, char *peer, size_t size)
{
    (void)ep;
    memset(out, 0, sizeof(*out));
    if (peer && size)
        peer[0] = 0;
}

static const endpoint_ops_t lack_ops = {.name = "cluster-link",
                                        .deliver = lack_deliver,
                                        .ack = lack_ack,
                                        .close = lack_close,
                                        .backlog = lack_backlog,
                                        .describe = lack_describe};

void cl_lack_routed(cl_t *cl, worker_t *w, uint16_t peer, uint64_t v, int wrote)
{
    cl_wq_t *q = &cl->links->wq[w->id];
    cl_lack_t *L = q->lack;
    if (L == NULL) {
        L = q->lack = an_calloc(1, sizeof(*L));
        L->ep.ops = &lack_ops;
        L->cl = cl;
        L->w = w;
    }
    if (!wrote && L->len == 0) {
        note_done(L, peer, v);
        return;
    }
    if (L->len == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 64;
        cl_lack_item_t *nv = an_malloc(cap * sizeof(*nv));
        for (size_t i = 0; i < L->len; i++)
            nv[i] = L->v[(L->head + i) & (L->cap - 1)];
        free(L->v);
        L->v = nv;
        L->cap = cap;
        L->head = 0;
    }
    L->v[(L->head + L->len++) & (L->cap - 1)] = (cl_lack_item_t){.v = v, .peer = peer};
    persist_hold_ack(w, &L->ep, 0, EP_ACK_PUBACK, 0, 0);
}

static void lack_apply(cl_t *cl, void *arg)
{
    cl_lack_rep_t *r = arg;
    cl_links_t *Ls = cl->links;
    if (Ls == NULL || atomic_load(&cl->stopping)) {
        free(r);
        return;
    }
    for (uint32_t i = 0; i < r->n; i++) {
        cl_peer_t *p = &Ls->peers[r->e[i].peer & (CL_MAX_NODES - 1)];
        if (p->lk == NULL || CL_LACK_GEN(r->e[i].v) != p->lk_gen)
            continue; /* about an earlier process of the peer */
        uint64_t seq = CL_LACK_SEQ(r->e[i].v);
        if (seq > p->lk[2 * r->w + 1])
            p->lk[2 * r->w + 1] = seq;
        cl_conn_t *c = p->conn;
        if (c != NULL && c->up && cl_lack_value(p) > p->acked) {
            cl_recv_ack(cl, p, c);
            if (!(c->ev.events & EV_WRITE))
                cl_conn_flush(cl, c);
        }
    }
    free(r);
}

void cl_lack_turn_end(cl_t *cl, worker_t *w)
{
    cl_lack_t *L = cl->links->wq[w->id].lack;
    if (L == NULL || L->ntouched == 0)
        return;
    cl_lack_rep_t *r = an_malloc(sizeof(*r) + L->ntouched * sizeof(r->e[0]));
    r->w = w->id;
    r->n = L->ntouched;
    for (uint32_t i = 0; i < L->ntouched; i++) {
        uint16_t peer = L->touched[i];
        r->e[i].peer = peer;
        r->e[i].v = L->done[peer];
        L->done[peer] = 0;
    }
    L->ntouched = 0;
    if (cl_post(cl, lack_apply, r) < 0)
        free(r);
}

void cl_lack_free(cl_lack_t *L)
{
    if (L == NULL)
        return;
    free(L->v);
    free(L);
}

/* ---- the link thread ---- */

uint64_t cl_lack_post(cl_t *cl, cl_peer_t *p, uint32_t to, uint64_t seq)
{
    cl_links_t *Ls = cl->links;
    if (p->lk == NULL)
        p->lk = an_calloc(2 * (size_t)Ls->nworkers, sizeof(uint64_t));
    uint64_t *posted = &p->lk[2 * to], *done = posted + 1;
    if (*posted <= *done) /* idle: everything before seq is done there */
        *done = seq - 1;
    *posted = seq;
    return CL_LACK_PACK(p->lk_gen, seq);
}

uint64_t cl_lack_value(const cl_peer_t *p)
{
    uint64_t v = p->in_seen;
    if (p->lk == NULL)
        return v;
    uint32_t n = p->cl->links->nworkers;
    for (uint32_t i = 0; i < n; i++)
        if (p->lk[2 * i] > p->lk[2 * i + 1] && p->lk[2 * i + 1] < v)
            v = p->lk[2 * i + 1];
    return v;
}

void cl_lack_reset(cl_peer_t *p)
{
    p->lk_gen = (p->lk_gen + 1) & 0xffff;
    if (p->lk != NULL)
        memset(p->lk, 0, 2 * (size_t)p->cl->links->nworkers * sizeof(uint64_t));
}
