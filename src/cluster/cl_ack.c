/* cl_ack.c -- a publisher's acknowledgement held until the nodes that got
 * its message have it (docs/cluster.md "QoS across nodes").
 *
 * Tickets.  cl_deliver gives each QoS 1/2 message it forwards one ticket of
 * the publisher's worker (cl_wq_t.ticket_no, counting up; worker_t.fwd_ticket)
 * and notes the nodes it went to (cl_wq_t.nodes).  The ticket travels with
 * every copy to the link thread (cl_fwd_t, cl_pend_t).  A node's cumulative
 * ACK releases its pending copies in order; the link thread gathers, per
 * worker, the highest ticket released and posts ONE CL_IT_ACKED item per
 * worker and ACK frame (cl_ack_post).  Copies of one worker reach one node
 * in ticket order, so "node n acknowledged ticket t" means every earlier
 * ticket of that worker to n is acknowledged too: a worker keeps one number
 * per node (cl_acks_t.acked).  A node that leaves, a copy dropped (the node
 * is no member, the bound of unacknowledged copies): the ticket is reported
 * as acknowledged, so no publisher waits for a node that is gone; but the
 * copies of a node whose sessions may be adopted are kept until its adopter
 * stored them (cl_hand.c), and their tickets wait until then.
 *
 * The ring.  proto.c's send_ack_after hands the acknowledgement of a
 * forwarded message to cl_ack_hold (the node row's hold_ack), and also any
 * acknowledgement of a connection that has some held while this ring is not
 * empty, so one connection's acknowledgements keep their order.  Items
 * leave from the head only, when every node of their ticket acknowledged
 * it; then the store's condition: an item that wrote to the store batch
 * (wrote), or any item while the store still holds something, moves to the
 * store's held ring (persist_hold_ack_batch), behind what is there, and
 * leaves with the commit (the store's ring is the second stage; this one
 * never takes items back from it).
 *
 * Threads: the ring and acked[] are the worker's own (cl_wq_t.acks); the
 * link thread touches cl_links_t.ackv only.
 */
#include <stdlib.h>
#include <string.h>

#include "cl_link_int.h"
#include "endpoint.h"
#include "persist.h"

typedef struct {
    endpoint_t *ep; /* NULL once the endpoint was freed */
    uint64_t sid;
    uint64_t ticket; /* 0: only behind others */
    uint64_t batch;  /* wrote: the store batch it waits for */
    uint64_t nodes[CL_MAX_NODES / 64];
    uint16_t pid;
    uint8_t type, reason, wrote;
} cl_hack_t;

struct cl_acks_s {
    cl_hack_t *v;
    size_t head, len, cap;        /* ring; cap a power of two */
    uint64_t acked[CL_MAX_NODES]; /* the highest ticket each node acknowledged */
};

static cl_hack_t *at(cl_acks_t *a, size_t i)
{
    return &a->v[(a->head + i) & (a->cap - 1)];
}

static cl_hack_t *push(cl_acks_t *a)
{
    if (a->len == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        cl_hack_t *v = an_malloc(cap * sizeof(*v));
        for (size_t i = 0; i < a->len; i++)
            v[i] = *at(a, i);
        free(a->v);
        a->v = v;
        a->cap = cap;
        a->head = 0;
    }
    return at(a, a->len++);
}

static int released(const cl_acks_t *a, const cl_hack_t *e)
{
    if (e->ticket == 0)
        return 1;
    for (int i = 0; i < CL_MAX_NODES / 64; i++)
        for (uint64_t bits = e->nodes[i]; bits; bits &= bits - 1) {
            int n = i * 64 + __builtin_ctzll(bits);
            if (a->acked[n] < e->ticket)
                return 0;
        }
    return 1;
}

/* Send what is at the head and released, in order. */
static void drain(worker_t *w, cl_acks_t *a)
{
    while (a->len > 0) {
        cl_hack_t *h = at(a, 0);
        if (!released(a, h))
            break;
        cl_hack_t e = *h; /* by value: ep_ack may hold new ones */
        a->head = (a->head + 1) & (a->cap - 1);
        a->len--;
        w->fwd_held--;
        if (e.ep == NULL)
            continue; /* its connection is gone */
        if (persist_on(w) && persist_must_wait(w, e.wrote, e.batch))
            persist_hold_ack_batch(w, e.ep, e.sid, e.type, e.pid, e.reason, e.wrote ? e.batch : 0);
        else
            ep_ack(e.ep, e.type, e.pid, e.reason, EP_ACK_HELD);
    }
}

void cl_ack_hold(worker_t *w, endpoint_t *ep, uint64_t sid, uint8_t type, uint16_t pid,
                 uint8_t reason, int wrote, void *user)
{
    cl_t *cl = user;
    cl_wq_t *q = &cl->links->wq[w->id];
    if (q->acks == NULL)
        q->acks = an_calloc(1, sizeof(*q->acks));
    cl_hack_t *e = push(q->acks);
    *e = (cl_hack_t){.ep = ep,
                     .sid = sid,
                     .ticket = w->fwd_ticket,
                     .pid = pid,
                     .type = type,
                     .reason = reason,
                     .wrote = wrote != 0};
    if (wrote)
        e->batch = persist_held_batch(w);
    if (e->ticket)
        memcpy(e->nodes, q->nodes, sizeof(e->nodes));
    w->fwd_ticket = 0; /* taken */
    w->fwd_held++;
    drain(w, q->acks); /* acknowledged already (a node that left, ...) */
}

void cl_ack_on_acked(cl_t *cl, worker_t *w, uint16_t node, uint64_t ticket)
{
    if (cl->links == NULL)
        return;
    cl_acks_t *a = cl->links->wq[w->id].acks;
    if (a == NULL) /* nothing held yet (a will's forward...): remember it */
        a = cl->links->wq[w->id].acks = an_calloc(1, sizeof(*a));
    node &= CL_MAX_NODES - 1;
    if (ticket > a->acked[node])
        a->acked[node] = ticket;
    drain(w, a);
}

void cl_ack_forget(worker_t *w, endpoint_t *ep, void *user)
{
    cl_t *cl = user;
    cl_acks_t *a = cl->links->wq[w->id].acks;
    for (size_t i = 0; a && i < a->len; i++)
        if (at(a, i)->ep == ep)
            at(a, i)->ep = NULL;
}

void cl_ack_free(cl_acks_t *a)
{
    if (a == NULL)
        return;
    free(a->v);
    free(a);
}

void cl_ack_post(cl_t *cl, int idx)
{
    cl_links_t *L = cl->links;
    for (uint32_t i = 0; i < L->nworkers; i++) {
        if (L->ackv[i] == 0)
            continue;
        inbox_item_t it = {.kind = WM_CLUSTER,
                           .flags = CL_IT_ACKED,
                           .sid = L->ackv[i],
                           .ptr = (void *)(uintptr_t)idx};
        inbox_vec_push(&L->outv[i], &it);
        L->ackv[i] = 0;
    }
}
