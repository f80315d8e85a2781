/* cl_fwd.c -- forwarding messages between nodes (cl_link.c's header says
 * how; cl_link_int.h).
 *
 * Workers: cl_deliver / cl_retained (the ROUTE_OWNER_NODE row) append to
 * the worker's own batch (cl_links_t.wq[w->id], touched by that worker
 * only: no lock, no syscall per message); cl_links_turn_end hands the
 * batch to the link thread with one cl_post at the end of the turn.
 * Link thread: everything else here (encoding, the QoS 1/2 window per
 * peer, acknowledgements, decoding what arrives and posting it to the
 * workers as WM_CLUSTER items, one inbox_post per worker and read).
 */
#include <stdlib.h>
#include <string.h>

#include "cl_link_int.h"
#include "log.h"
#include "module.h"
#include "persist.h"
#include "retain.h"
#include "router.h"

/* ---- the workers' side ---- */

/* A new entry of worker w's batch (m referenced). */
static cl_fwd_t *wq_push(worker_t *w, cl_t *cl, uint16_t node, msg_t *m, uint8_t qos,
                         uint64_t ticket)
{
    cl_wq_t *q = &cl->links->wq[w->id];
    cl_batch_t *b = q->b;
    if (b == NULL || b->n == b->cap) {
        uint32_t cap = b ? b->cap * 2 : 64;
        b = an_realloc(b, sizeof(*b) + cap * sizeof(b->v[0]));
        if (q->b == NULL) {
            b->n = 0;
            b->src = (uint16_t)w->id;
            module_turn_end_ask(w, &w->srv->modules[cl->mod_index]);
        }
        b->cap = cap;
        q->b = b;
    }
    cl_fwd_t *e = &b->v[b->n++];
    *e = (cl_fwd_t){.m = msg_ref(m), .ticket = ticket, .node = node, .qos = qos, .plain = 1};
    return e;
}

/* The entry of this publish of m for node `node` already in w's batch, to
 * which another fact (an ordinary match, another group) is added: the
 * deliveries of one publish are at the batch's end, one per match. */
static cl_fwd_t *wq_find(cl_t *cl, worker_t *w, uint16_t node, const msg_t *m)
{
    cl_batch_t *b = cl->links->wq[w->id].b;
    for (uint32_t i = b ? b->n : 0; i-- > 0 && b->v[i].m == m;)
        if (b->v[i].node == node && b->v[i].ngroups < CL_GROUPS_MAX)
            return &b->v[i];
    return NULL;
}

/* ROUTE_OWNER_NODE: m matched a filter node `owner` announced. */
static void cl_deliver(worker_t *w, uint64_t sid, uint16_t owner, msg_t *m, uint8_t qos,
                       uint8_t flags, void *user)
{
    /* a group picked the node: the group's tag is in the sid (router.h) */
    uint32_t tag = (flags & DLV_SHARED) ? (uint32_t)(sid >> 16) : 0;
    /* never forward what came from a node; a retained message goes to
     * every member through cl_retained instead (but a group's pick is
     * for that node alone) */
    if (m->hops > 0 || (m->retain && tag == 0))
        return;
    cl_t *cl = user;
    owner &= CL_MAX_NODES - 1;
    uint64_t ticket = 0;
    if (qos > 0) {
        if (CL_STAT_GET(cl->lstats[owner].busy))
            w->publish_backlogged = 1; /* the publisher pauses a tick (router.h) */
        /* one ticket per message, whatever the number of nodes: the
         * publisher's acknowledgement waits for each of them (cl_ack.c) */
        cl_wq_t *q = &cl->links->wq[w->id];
        if (w->fwd_ticket == 0) {
            w->fwd_ticket = ++q->ticket_no;
            memset(q->nodes, 0, sizeof(q->nodes));
        }
        q->nodes[owner >> 6] |= 1ull << (owner & 63);
        ticket = w->fwd_ticket;
    }
    if (flags & DLV_TICKET)
        return; /* held for a commit: the ticket only, sent later (router.h) */
    /* one frame per node and publish, carrying every fact (docs/cluster.md
     * "Routes": once to each node, never twice) */
    cl_fwd_t *e = wq_find(cl, w, owner, m);
    if (e == NULL) {
        e = wq_push(w, cl, owner, m, qos, ticket);
        e->plain = 0;
    } else if (qos > e->qos) {
        e->qos = qos;
        e->ticket = ticket;
    }
    if (tag)
        e->tags[e->ngroups++] = tag;
    else
        e->plain = 1;
}

/* A retained publish or clear made here: to every member. */
static void cl_retained(worker_t *w, msg_t *m, void *user)
{
    wq_push(w, user, 0, m, m->qos, 0);
}

static void batch_free(cl_batch_t *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        msg_unref(&b->v[i].m);
    free(b);
}

static void fwd_apply(cl_t *cl, void *arg);

void cl_links_turn_end(cl_t *cl, worker_t *w)
{
    cl_wq_t *q = &cl->links->wq[w->id];
    cl_batch_t *b = q->b;
    q->b = NULL;
    if (b != NULL && cl_post(cl, fwd_apply, b) < 0)
        batch_free(b);
    if (q->lack != NULL)
        cl_lack_turn_end(cl, w);
}

/* WM_CLUSTER, on the worker that took it. */
static void run_cluster(worker_t *w, inbox_item_t *it)
{
    if (it->flags == CL_IT_ACKED) {
        cl_t *cl = w->srv->route_owners[ROUTE_OWNER_NODE].user;
        cl_ack_on_acked(cl, w, (uint16_t)(uintptr_t)it->ptr, it->sid);
        return;
    }
    if (it->flags == CL_IT_ROUTES) {
        router_barrier_passed(w, it->sid);
        return;
    }
    /* sid: the link waits for the store (cl_lack.c) */
    size_t ops = it->sid ? persist_pending_ops(w) : 0;
    if (it->flags == CL_IT_RESHARE) {
        cl_shared_msg_t *sm = it->ptr;
        for (uint8_t i = 0; i < sm->n; i++)
            router_reshare_named(w, sm->m, sm->f[i], sm->len[i]);
        msg_unref(&sm->m);
        free(sm);
        return;
    }
    if (it->flags == CL_IT_SHARED) {
        cl_shared_msg_t *sm = it->ptr;
        w->publish_backlogged = 0;
        if (sm->plain)
            router_publish(w, sm->m, NULL);
        for (uint8_t i = 0; i < sm->n; i++)
            router_deliver_shared(w, sm->m, sm->f[i], sm->len[i]);
        if (it->sid)
            cl_lack_routed(w->srv->route_owners[ROUTE_OWNER_NODE].user, w, sm->m->origin_node,
                           it->sid, persist_pending_ops(w) != ops);
        msg_unref(&sm->m);
        free(sm);
        return;
    }
    msg_t *m = it->ptr;
    if (it->flags == CL_IT_PUBLISH) {
        w->publish_backlogged = 0;
        if (router_publish(w, m, NULL) == 0 && !m->retain) {
            /* forwarded for nothing (rbloom.h): counted, dropped; its
             * link ack is not held (nothing was written: cl_lack.c) */
            cl_t *cl = w->srv->route_owners[ROUTE_OWNER_NODE].user;
            atomic_fetch_add_explicit(&cl->lstats[m->origin_node & (CL_MAX_NODES - 1)].unmatched, 1,
                                      memory_order_relaxed); /* any worker: a locked add */
        }
        if (unlikely(w->publish_backlogged)) {
            /* a subscriber here is behind: the link this came on is read
             * later, its ACKs come later, the publishers there wait for
             * their PUBACKs (cl_ack.c) and so feel the subscriber's pace */
            cl_t *cl = w->srv->route_owners[ROUTE_OWNER_NODE].user;
            atomic_store_explicit(&cl->links->slow[m->origin_node & (CL_MAX_NODES - 1)], 1,
                                  memory_order_relaxed);
        }
        if (it->sid)
            cl_lack_routed(w->srv->route_owners[ROUTE_OWNER_NODE].user, w, m->origin_node, it->sid,
                           persist_pending_ops(w) != ops);
    } else { /* CL_IT_RETAIN: newer than ours (cl_route.c decided) */
        retain_set(w->srv->retain, m);
        persist_retained(w, m);
    }
    msg_unref(&m);
}

static void drop_cluster(inbox_item_t *it)
{
    if (it->flags == CL_IT_ACKED || it->flags == CL_IT_ROUTES)
        return;
    if (it->flags == CL_IT_SHARED || it->flags == CL_IT_RESHARE) {
        cl_shared_msg_t *sm = it->ptr;
        msg_unref(&sm->m);
        free(sm);
        return;
    }
    msg_t *m = it->ptr;
    msg_unref(&m);
}

void cl_fwd_register(cl_t *cl)
{
    static const worker_inbox_kind_t kind = {.run = run_cluster, .drop = drop_cluster};
    worker_inbox_register(cl->srv, WM_CLUSTER, &kind);
    router_owner_register(cl->srv, ROUTE_OWNER_NODE,
                          &(route_owner_kind_t){.deliver = cl_deliver,
                                                .user = cl,
                                                .retained = cl_retained,
                                                .hold_ack = cl_ack_hold,
                                                .forget_endpoint = cl_ack_forget,
                                                .sub_barrier = cl_route_barrier});
}

void cl_fwd_free(cl_t *cl)
{
    cl_links_t *L = cl->links;
    for (uint32_t i = 0; i < L->nworkers; i++)
        if (L->wq[i].b) {
            batch_free(L->wq[i].b);
            L->wq[i].b = NULL;
        }
    for (uint32_t i = 0; i < L->nworkers; i++) {
        cl_ack_free(L->wq[i].acks);
        L->wq[i].acks = NULL;
        cl_lack_free(L->wq[i].lack);
        L->wq[i].lack = NULL;
    }
    for (uint32_t i = 0; i < L->nworkers; i++) {
        for (size_t j = 0; j < L->outv[i].len; j++)
            drop_cluster(&L->outv[i].items[j]);
        L->outv[i].len = 0;
    }
}

/* ---- the link thread: sending ---- */

static size_t out_pending(const cl_conn_t *c)
{
    return c->out.len - c->out_off;
}

/* Encode m into c's output (for peer p's groups `tags` and, plain, its
 * ordinary subscribers); 0, or -1 when it expired (nothing written). */
static int encode(cl_peer_t *p, cl_conn_t *c, msg_t *m, uint64_t seq, uint8_t qos, uint16_t src,
                  uint8_t plain, uint8_t ngroups, const uint32_t *tags)
{
    uint64_t now = 0; /* the clock only for a message with an expiry */
    if (m->expire_at) {
        now = an_now_ms();
        if (now >= m->expire_at)
            return -1;
    }
    cl_msg_t x = cl_msg_of(m, now);
    x.seq = seq;
    x.src = src;
    x.qos = qos;
    cl_msg_set_id(&x, m, c);
    if (ngroups == 0) {
        cl_enc_msg(&c->out, CL_F_MSG, &x);
        return 0;
    }
    cl_groups_t g = {.plain = plain};
    for (uint8_t i = 0; i < ngroups; i++) {
        g.f[g.n] = cl_route_share(p, tags[i], &g.len[g.n]);
        if (g.f[g.n] != NULL) /* else it left the group meanwhile */
            g.n++;
    }
    cl_enc_msg_shared(&c->out, &g, &x); /* also when empty: the seq must arrive */
    return 0;
}

void cl_peer_pump(cl_t *cl, cl_peer_t *p)
{
    (void)cl;
    cl_conn_t *c = p->conn;
    if (c == NULL || !c->up)
        return;
    while (p->sent < p->len && out_pending(c) < CL_OUT_MAX) {
        cl_pend_t *e = &p->pend[p->sent++];
        encode(p, c, e->m, e->seq, e->qos, e->src, e->plain, e->ngroups, e->tags);
    }
}

/* Tell worker src now that node idx will not acknowledge its ticket (the
 * message was dropped): its publisher is not kept waiting. */
static void ack_now(cl_t *cl, int idx, uint16_t src, uint64_t ticket)
{
    cl_links_t *L = cl->links;
    if (ticket == 0 || src >= L->nworkers)
        return;
    inbox_item_t it = {
        .kind = WM_CLUSTER, .flags = CL_IT_ACKED, .sid = ticket, .ptr = (void *)(uintptr_t)idx};
    inbox_vec_push(&L->outv[src], &it);
}

static void peer_send(cl_t *cl, int idx, const cl_fwd_t *f, msg_t *m, uint8_t qos, uint16_t src,
                      uint64_t ticket)
{
    cl_peer_t *p = &cl->links->peers[idx];
    cl_link_stats_t *st = &cl->lstats[idx];
    cl_conn_t *c = p->conn;
    if (qos == 0) {
        if (c != NULL && c->up && out_pending(c) < CL_OUT_MAX) {
            if (encode(p, c, m, 0, 0, src, f->plain, f->ngroups, f->tags) == 0)
                CL_STAT_ADD(st->fwd[0], 1);
        } else {
            CL_STAT_ADD(st->dropped, 1);
        }
        return;
    }
    if (p->len - p->head >= CL_PEND_MAX) {
        CL_STAT_ADD(st->dropped, 1);
        log_limited(10000, AN_LOG_WARN,
                    "cluster: %d QoS 1/2 messages for %s wait for its acknowledgement: "
                    "dropping new ones",
                    CL_PEND_MAX, cl->nodes[idx].name);
        ack_now(cl, idx, src, ticket);
        return;
    }
    if (p->len == p->cap) {
        if (p->head > 0) { /* slide the window back to the start */
            memmove(p->pend, p->pend + p->head, (p->len - p->head) * sizeof(*p->pend));
            p->len -= p->head;
            p->sent -= p->head;
            p->head = 0;
        }
        if (p->len == p->cap) {
            p->cap = p->cap ? p->cap * 2 : 256;
            p->pend = an_realloc(p->pend, p->cap * sizeof(*p->pend));
        }
    }
    cl_pend_t *e = &p->pend[p->len++];
    *e = (cl_pend_t){.m = msg_ref(m),
                     .seq = ++p->out_seq,
                     .ticket = ticket,
                     .qos = qos,
                     .plain = f->plain,
                     .ngroups = f->ngroups,
                     .src = src};
    memcpy(e->tags, f->tags, sizeof(e->tags));
    CL_STAT_ADD(st->fwd[qos], 1);
    CL_STAT_SET(st->queued, p->len - p->head);
    if (p->len - p->head == 1)
        CL_STAT_SET(st->oldest, m->published_at);
    if (p->len - p->head > CL_PEND_HIGH && !CL_STAT_GET(st->busy))
        CL_STAT_SET(st->busy, 1);
    cl_peer_pump(cl, p);
}

/* Entry i of b is for node n that left: a publish routed before the
 * routes of n's adopted sessions were known here, applied after their
 * adopter asked for what was kept for n (a worker's batch; a route held
 * for a store commit), would reach nobody.  Each adopter that asked and
 * that this publish does not reach anyway gets it: the adopter routes it
 * to the adopted sessions (its own sessions would have been reached).
 * The publisher's acknowledgement does not wait for it (cl_hand.c). */
static void late_copy(cl_t *cl, const cl_batch_t *b, uint32_t i)
{
    const cl_fwd_t *e = &b->v[i];
    const cl_peer_t *p = &cl->links->peers[e->node];
    for (int a = 1; a < CL_MAX_NODES; a++) {
        if (!(p->asked_by[a / 64] >> (a % 64) & 1) || !cl->nodes[a].member)
            continue;
        int reached = 0;
        for (uint32_t k = i; k-- > 0 && b->v[k].m == e->m && !reached;)
            reached = b->v[k].node == a;
        for (uint32_t k = i + 1; k < b->n && b->v[k].m == e->m && !reached; k++)
            reached = b->v[k].node == a;
        if (reached)
            continue;
        cl_fwd_t f = *e; /* for its plain subscribers: a group's pick was n's */
        f.node = (uint16_t)a;
        f.ngroups = 0;
        peer_send(cl, a, &f, e->m, e->qos, b->src, 0);
        log_limited(5000, AN_LOG_INFO,
                    "cluster: a QoS %u message for node %s routed before its adopter's routes "
                    "were known here: sent to %s, its adopter",
                    e->qos, cl->nodes[e->node].name, cl->nodes[a].name);
    }
}

static int asked_any(const cl_peer_t *p)
{
    for (size_t k = 0; k < CL_MAX_NODES / 64; k++)
        if (p->asked_by[k])
            return 1;
    return 0;
}

static void fwd_apply(cl_t *cl, void *arg)
{
    cl_batch_t *b = arg;
    if (cl->links == NULL) { /* posted after the thread ended, run by cl_free */
        batch_free(b);
        return;
    }
    for (uint32_t i = 0; i < b->n; i++) {
        cl_fwd_t *e = &b->v[i];
        if (e->node == 0) {
            /* a retained publish or clear made here (cl_retained) */
            if (e->m->payload_len == 0)
                cl_tomb_note(cl, msg_topic(e->m), e->m->topic_len, e->m->published_at,
                             cl->conf->node);
            else
                cl_tomb_set(cl, msg_topic(e->m), e->m->topic_len, e->m->published_at,
                            cl->conf->node);
            for (int j = 1; j < CL_MAX_NODES; j++)
                if (cl->nodes[j].member)
                    peer_send(cl, j, e, e->m, e->qos, b->src, 0);
        } else {
            const cl_peer_t *p = &cl->links->peers[e->node];
            /* published (routed) up to the latest ask: perhaps before the
             * adopter's routes were known (the turn clock: 1 ms slack) */
            int late = 0;
            if (!cl->nodes[e->node].member && e->qos > 0 && e->plain && asked_any(p) &&
                e->m->published_at <= p->asked_at + 1) {
                late = 1;
                late_copy(cl, b, i);
            }
            if (!cl->nodes[e->node].member && e->qos > 0 && e->plain && p->own_asked_at &&
                e->m->published_at <= p->own_asked_at + 1) { /* this node adopts it */
                late = 1;
                cl_adopt_late(cl, cl->nodes[e->node].name, e->m);
            }
            /* routes_kept: it left, kept (cl_hand.c); a late one too while its
             * copies are (its publisher's acknowledgement waits until then) */
            if (cl->nodes[e->node].member || p->routes_kept || (late && p->orphan))
                peer_send(cl, e->node, e, e->m, e->qos, b->src, e->ticket);
            else
                ack_now(cl, e->node, b->src, e->ticket); /* it left: nobody there */
        }
    }
    for (uint32_t i = 0; i < b->n; i++) /* after the loop: late_copy looks at the others */
        msg_unref(&b->v[i].m);
    free(b);
    if (atomic_load(&cl->stopping))
        return;
    cl_recv_flush(cl); /* acknowledgements of dropped messages */
    /* one write per link with output */
    cl_conn_t *c = cl->links->conns;
    while (c != NULL) {
        cl_conn_t *next = c->next;
        if (c->up && out_pending(c) > 0 && !(c->ev.events & EV_WRITE))
            cl_conn_flush(cl, c);
        c = next;
    }
}

void cl_peer_acked(cl_t *cl, cl_peer_t *p, uint64_t seq)
{
    cl_links_t *L = cl->links;
    int any = 0;
    while (p->head < p->len && p->pend[p->head].seq <= seq) {
        cl_pend_t *e = &p->pend[p->head++];
        cl_ack_note(L, e->src, e->ticket);
        any |= e->ticket != 0;
        msg_unref(&e->m);
    }
    if (p->sent < p->head)
        p->sent = p->head;
    if (p->head == p->len)
        p->head = p->sent = p->len = 0;
    int idx = (int)(p - cl->links->peers);
    if (any)
        cl_ack_post(cl, idx); /* the read's cl_recv_flush posts it */
    CL_STAT_SET(cl->lstats[idx].queued, p->len - p->head);
    CL_STAT_SET(cl->lstats[idx].oldest, p->head < p->len ? p->pend[p->head].m->published_at : 0);
    if (p->len - p->head < CL_PEND_LOW && CL_STAT_GET(cl->lstats[idx].busy))
        CL_STAT_SET(cl->lstats[idx].busy, 0);
}

void cl_peer_drop_pending(cl_t *cl, cl_peer_t *p)
{
    int idx = (int)(p - cl->links->peers);
    for (size_t i = p->head; i < p->len; i++) {
        cl_ack_note(cl->links, p->pend[i].src, p->pend[i].ticket);
        msg_unref(&p->pend[i].m);
    }
    /* the node left: its subscribers went with it, the publishers of what
     * it held are acknowledged (docs/cluster.md "QoS across nodes") */
    cl_ack_post(cl, idx);
    if (!atomic_load(&cl->stopping))
        cl_recv_flush(cl);
    free(p->pend);
    p->pend = NULL;
    p->head = p->sent = p->len = p->cap = 0;
    CL_STAT_SET(cl->lstats[idx].queued, 0);
    CL_STAT_SET(cl->lstats[idx].oldest, 0);
    CL_STAT_SET(cl->lstats[idx].busy, 0);
}

void cl_fwd_reshare(cl_t *cl, cl_peer_t *p)
{
    cl_links_t *L = cl->links;
    uint32_t posted = 0;
    for (size_t i = p->head; i < p->len; i++) {
        cl_pend_t *e = &p->pend[i];
        if (e->ngroups == 0)
            continue;
        const uint8_t *f[CL_GROUPS_MAX];
        uint16_t fl[CL_GROUPS_MAX];
        uint8_t n = 0;
        size_t dl = 0;
        for (uint8_t k = 0; k < e->ngroups; k++)
            if ((f[n] = cl_route_share(p, e->tags[k], &fl[n])) != NULL)
                dl += fl[n++];
        e->ngroups = 0; /* picked again here: not handed or sent twice */
        if (n == 0)
            continue; /* the group left p before p did */
        cl_shared_msg_t *sm = an_malloc(sizeof(*sm) + dl);
        sm->m = msg_ref(e->m);
        sm->plain = 0;
        sm->n = n;
        uint8_t *d = sm->data;
        for (uint8_t k = 0; k < n; k++) {
            memcpy(d, f[k], fl[k]);
            sm->f[k] = d;
            sm->len[k] = fl[k];
            d += fl[k];
        }
        /* the publisher's worker: its messages are picked again in order */
        inbox_item_t it = {.kind = WM_CLUSTER, .qos = e->qos, .flags = CL_IT_RESHARE, .ptr = sm};
        inbox_vec_push(&L->outv[e->src % L->nworkers], &it);
        posted++;
    }
    if (posted)
        log_info("cluster: %u QoS 1/2 messages for shared groups that node %s had not "
                 "acknowledged go to their groups' other members",
                 posted, cl->nodes[p - L->peers].name);
}

/* ---- the link thread: receiving ---- */

void cl_recv_post(cl_t *cl, uint32_t to, msg_t *m, uint8_t what)
{
    cl_links_t *L = cl->links;
    inbox_item_t it = {.kind = WM_CLUSTER, .qos = m->qos, .flags = what, .ptr = m};
    inbox_vec_push(&L->outv[to % L->nworkers], &it);
}

void cl_recv_flush(cl_t *cl)
{
    cl_links_t *L = cl->links;
    for (uint32_t i = 0; i < L->nworkers; i++)
        if (L->outv[i].len)
            inbox_post(&cl->srv->workers[i].inbox, &L->outv[i]);
}

int cl_recv_msg(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len)
{
    cl_msg_t x;
    if (cl_dec_msg(body, len, &x) < 0 || x.topic_len == 0)
        return -1;
    if (x.seq != 0) {
        if (x.seq <= p->in_seen)
            return 0; /* sent again after a reconnect: we have it */
        p->in_seen = x.seq;
    }
    int idx = (int)(p - cl->links->peers);
    uint64_t expire = x.expiry_ms ? an_now_ms() + x.expiry_ms : 0;
    msg_t *m = msg_new_v5(x.topic, x.topic_len, x.props, x.props_len, x.payload, x.payload_len,
                          x.qos, (x.flags & CL_MSG_RETAIN) != 0, expire);
    m->published_at = x.published_at;
    m->origin_node = (uint16_t)idx;
    m->hops = 1;
    m->id_epoch = x.id_epoch; /* its publish id (id_seq 0: the peer sent none) */
    m->id_seq = x.id_seq;
    if (x.flags & CL_MSG_RETAIN) { /* published there: a clear leaves a tombstone */
        if (x.payload_len == 0)
            cl_tomb_note(cl, x.topic, x.topic_len, x.published_at, cl->nodes[idx].name);
        else
            cl_tomb_set(cl, x.topic, x.topic_len, x.published_at, cl->nodes[idx].name);
    }
    CL_STAT_ADD(cl->lstats[idx].received, 1);
    cl_links_t *L = cl->links;
    uint32_t to = x.src % L->nworkers;
    inbox_item_t it = {.kind = WM_CLUSTER, .qos = m->qos, .flags = CL_IT_PUBLISH, .ptr = m};
    if (x.seq != 0 && cl->srv->store != NULL) /* acknowledged after the store (cl_lack.c) */
        it.sid = cl_lack_post(cl, p, to, x.seq);
    inbox_vec_push(&L->outv[to], &it);
    return 0;
}

int cl_recv_msg_shared(cl_t *cl, cl_peer_t *p, const uint8_t *body, uint32_t len)
{
    cl_groups_t g;
    cl_msg_t x;
    if (cl_dec_msg_shared(body, len, &g, &x) < 0 || x.topic_len == 0)
        return -1;
    if (x.seq != 0) {
        if (x.seq <= p->in_seen)
            return 0; /* sent again after a reconnect: we have it */
        p->in_seen = x.seq;
    }
    int idx = (int)(p - cl->links->peers);
    CL_STAT_ADD(cl->lstats[idx].received, 1);
    if (g.n == 0 && !g.plain)
        return 0; /* its groups left: nothing to do but acknowledge */
    size_t dl = 0;
    for (uint8_t i = 0; i < g.n; i++)
        dl += g.len[i];
    /* one allocation per message for groups (besides the message's own) */
    cl_shared_msg_t *sm = an_malloc(sizeof(*sm) + dl);
    sm->plain = g.plain;
    sm->n = g.n;
    uint8_t *d = sm->data;
    for (uint8_t i = 0; i < g.n; i++) {
        memcpy(d, g.f[i], g.len[i]);
        sm->f[i] = d;
        sm->len[i] = g.len[i];
        d += g.len[i];
    }
    uint64_t expire = x.expiry_ms ? an_now_ms() + x.expiry_ms : 0;
    sm->m = msg_new_v5(x.topic, x.topic_len, x.props, x.props_len, x.payload, x.payload_len, x.qos,
                       (x.flags & CL_MSG_RETAIN) != 0, expire);
    sm->m->published_at = x.published_at;
    sm->m->origin_node = (uint16_t)idx;
    sm->m->hops = 1;
    sm->m->id_epoch = x.id_epoch;
    sm->m->id_seq = x.id_seq;
    cl_links_t *L = cl->links;
    uint32_t to = x.src % L->nworkers;
    inbox_item_t it = {.kind = WM_CLUSTER, .qos = x.qos, .flags = CL_IT_SHARED, .ptr = sm};
    if (x.seq != 0 && cl->srv->store != NULL)
        it.sid = cl_lack_post(cl, p, to, x.seq);
    inbox_vec_push(&L->outv[to], &it);
    return 0;
}

void cl_recv_ack(cl_t *cl, cl_peer_t *p, cl_conn_t *c)
{
    (void)cl;
    uint64_t v = cl_lack_value(p); /* in_seen, or less with a store */
    if (v > p->acked) {
        cl_enc_ack(&c->out, v);
        p->acked = v;
    }
}
