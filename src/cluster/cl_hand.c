/* cl_hand.c -- the QoS 1/2 copies a dead member had not acknowledged,
 * handed to the survivor that adopts its sessions (docs/cluster.md "A dead
 * node's sessions").  Link thread, except where said.
 *
 * Sender side.  When member N goes out and adoption is on (cl->adopt),
 * the copies forwarded to N and not acknowledged by it stay in N's window
 * (cl_peer_t.orphan) instead of being released: their publishers'
 * acknowledgements stay held (cl_ack.c).  N's routes stay too
 * (routes_kept; its shared groups' go at once, so the groups pick other
 * members): what is published meanwhile for N's subscribers is queued in
 * N's window the same way (fwd_apply), until an adopter asks (then they go:
 * the adopter installed N's sessions and every member acknowledged their
 * routes before it asked) or the watch ends.  The adopter X asks for them
 * (CL_F_ADOPT_ASK with N's name); the sender answers on the same link with
 * each copy (CL_F_ADOPT_MSG, the message as forwarded) and CL_F_ADOPT_END,
 * and notes X in N's asked_by: a publish routed to N before X's routes were
 * known here and applied after the answer goes to X (cl_fwd.c late_copy).  Once X's store has the
 * adopted sessions (its barrier commit) it says CL_F_ADOPT_DONE, and the
 * sender releases them (the tickets are reported acknowledged).  If no
 * adopter asks, the copies are released when this node's own watch of N
 * ends (adopted elsewhere without asking us, stopped cleanly, nothing to
 * adopt, cluster.adopt_wait): the old rule.  With replicated sessions N
 * has several adopters (one per share): every one asks, and the copies and
 * N's routes stay until the watch ends (each named replica done), not
 * released at the first DONE.  N coming back ends the state:
 * its new process gets them again (the link resends what is unacknowledged).
 *
 * The end (cl_hand_over, after the adopter's claims): CL_F_ADOPT_IDS, the
 * client ids it claimed (in frames of about IDS_CHUNK bytes), then
 * CL_F_ADOPT_OVER to every member whose link is up; a receiver keeps the
 * ids with the sender as their owner (cl_owner_adopted) and opens its
 * connect gate for N (cl_adopt_over).  The adopter does the same for
 * itself.
 *
 * Adopter side.  cl_hand_ask (adopter thread, through cl_post) sends ASK to
 * every member whose link is up and takes its own copies for N directly;
 * what arrives is passed to cl_adopt_collected, which merges the copies
 * into the sessions being adopted (cl_adopt.c).  Copies for shared groups
 * only (not plain) are not handed over.
 */
#include <stdlib.h>
#include <string.h>

#include "cl_link_int.h"
#include "log.h"

struct cl_hand_in_s {
    msg_t **v;
    uint32_t n, cap;
};

static void in_push(cl_peer_t *p, msg_t *m)
{
    if (p->hand_in == NULL)
        p->hand_in = an_calloc(1, sizeof(*p->hand_in));
    cl_hand_in_t *h = p->hand_in;
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->v = an_realloc(h->v, h->cap * sizeof(*h->v));
    }
    h->v[h->n++] = m;
}

void cl_hand_in_free(cl_peer_t *p)
{
    cl_hand_in_t *h = p->hand_in;
    if (h == NULL)
        return;
    for (uint32_t i = 0; i < h->n; i++)
        msg_unref(&h->v[i]);
    free(h->v);
    free(h);
    p->hand_in = NULL;
}

int cl_hand_keep(cl_t *cl, cl_peer_t *p)
{
    if (p->hand_done) { /* its adopter stored them already */
        p->hand_done = 0;
        return 0;
    }
    if (cl->adopt == NULL)
        return 0;
    p->orphan = p->routes_kept = 1;
    memset(p->asked_by, 0, sizeof(p->asked_by));
    p->asked_at = p->own_asked_at = 0;
    p->sent = p->head;
    cl_route_drop_peer_shares(cl, p);
    return 1;
}

/* An adopter asked for node n's copies, or nobody will: its routes go (the
 * adopter announces those of the sessions it installs). */
static void drop_routes(cl_t *cl, int n)
{
    cl_peer_t *p = &cl->links->peers[n];
    if (p->routes_kept && !cl->nodes[n].member)
        cl_route_drop_peer(cl, p);
    p->routes_kept = 0;
}

/* The node of this name, or -1 (never seen: nothing kept for it). */
static int find_node(cl_t *cl, const uint8_t *name, uint16_t len)
{
    for (int i = 1; i < CL_MAX_NODES; i++)
        if (cl->nodes[i].name[0] && strlen(cl->nodes[i].name) == len &&
            memcmp(cl->nodes[i].name, name, len) == 0)
            return i;
    return -1;
}

/* The copies kept for node n, as new references (plain ones only); its
 * routes kept go: nothing more is kept for it.  With replicated sessions
 * (several adopters, one per share of n's sessions, each asking) the
 * routes and the copies stay until this node's watch of n ends (every
 * adopter done: end_task), so each adopter gets what was kept up to its
 * own ask. */
static msg_t **kept(cl_t *cl, int n, uint32_t *count)
{
    *count = 0;
    if (n <= 0)
        return NULL;
    if (!cl_repl_on(cl))
        drop_routes(cl, n);
    cl_peer_t *p = &cl->links->peers[n];
    /* also while it still looks a member here with its link down: the
     * adopter holds its lock, its going out has not reached us yet */
    if (p->head == p->len || (!p->orphan && p->conn != NULL && p->conn->up))
        return NULL;
    msg_t **v = an_malloc((p->len - p->head) * sizeof(*v));
    for (size_t i = p->head; i < p->len; i++)
        if (p->pend[i].plain)
            v[(*count)++] = msg_ref(p->pend[i].m);
    return v;
}

static void release(cl_t *cl, int n, const char *why)
{
    cl_peer_t *p = &cl->links->peers[n];
    if (cl->nodes[n].member) {
        /* its going out has not reached us (DONE came first): released
         * when it does; or it is back: its new process gets them */
        p->hand_done = why == NULL && !p->orphan && (p->conn == NULL || !p->conn->up);
        return;
    }
    drop_routes(cl, n);
    if (!p->orphan)
        return;
    p->orphan = 0;
    if (why != NULL && p->len > p->head)
        log_warn("cluster: %zu QoS 1/2 messages for node %s released unacknowledged (%s)",
                 p->len - p->head, cl->nodes[n].name, why);
    cl_peer_drop_pending(cl, p);
}

int cl_hand_recv(cl_t *cl, cl_peer_t *p, cl_conn_t *c, uint8_t type, const uint8_t *body,
                 uint32_t len)
{
    if (type == CL_F_ADOPT_IDS) { /* the sender adopted them: it owns their claims */
        if (len < 2 || 2u + (uint32_t)(body[0] << 8 | body[1]) > len)
            return -1;
        uint32_t off = 2u + (uint32_t)(body[0] << 8 | body[1]);
        cl_owner_adopted(cl, cl->nodes[c->idx].name, 0, body + off, len - off);
        return 0;
    }
    if (type == CL_F_ADOPT_MSG) {
        cl_msg_t x;
        if (cl_dec_msg(body, len, &x) < 0 || x.topic_len == 0)
            return -1;
        uint64_t expire = x.expiry_ms ? an_now_ms() + x.expiry_ms : 0;
        msg_t *m = msg_new_v5(x.topic, x.topic_len, x.props, x.props_len, x.payload, x.payload_len,
                              x.qos, (x.flags & CL_MSG_RETAIN) != 0, expire);
        m->published_at = x.published_at;
        m->id_epoch = x.id_epoch; /* its publish id, if the member sent it */
        m->id_seq = x.id_seq;
        in_push(p, m);
        return 0;
    }
    const uint8_t *name;
    uint16_t nl;
    if (cl_dec_route(body, len, &name, &nl) < 0 || nl == 0 || nl >= CL_NAME_MAX)
        return -1;
    char nm[CL_NAME_MAX];
    memcpy(nm, name, nl);
    nm[nl] = '\0';
    int n = find_node(cl, name, nl);
    if (type == CL_F_ADOPT_ASK) { /* we are a sender: our copies for n */
        uint32_t k = 0;
        msg_t **v = kept(cl, n, &k);
        if (n > 0) { /* what was routed for n before this and comes later goes to it */
            cl->links->peers[n].asked_by[c->idx / 64] |= 1ull << (c->idx % 64);
            cl->links->peers[n].asked_at = an_wall_ms();
        }
        uint64_t now = an_now_ms();
        for (uint32_t i = 0; i < k; i++) {
            msg_t *m = v[i];
            if (!m->expire_at || m->expire_at > now) {
                cl_msg_t x = cl_msg_of(m, now);
                cl_msg_set_id(&x, m, c);
                cl_enc_msg(&c->out, CL_F_ADOPT_MSG, &x);
            }
            msg_unref(&v[i]);
        }
        free(v);
        cl_enc_route(&c->out, CL_F_ADOPT_END, name, nl);
        if (k)
            log_info("cluster: %u QoS 1/2 messages for node %s handed to %s, its adopter", k, nm,
                     cl->nodes[c->idx].name);
        return 0;
    }
    if (type == CL_F_ADOPT_END) {
        cl_hand_in_t *h = p->hand_in;
        p->hand_in = NULL;
        cl_adopt_collected(cl, nm, h ? h->v : NULL, h ? h->n : 0, 1);
        if (h) {
            free(h->v);
            free(h);
        }
        return 0;
    }
    if (type == CL_F_ADOPT_DONE && n > 0 && !cl_repl_on(cl)) /* replicated: at the watch's end */
        release(cl, n, NULL);
    if (type == CL_F_ADOPT_OVER)
        cl_adopt_over(cl, nm, c->idx);
    return 0;
}

/* ---- posted by the adopter thread ---- */

static void ask_task(cl_t *cl, void *arg)
{
    char *name = arg;
    if (cl->links == NULL) {
        free(name);
        return;
    }
    uint16_t nl = (uint16_t)strlen(name);
    /* our own copies first: once the count below is known (0 when no
     * other member is up), the adopter may go on at once */
    uint32_t k = 0;
    int n = find_node(cl, (const uint8_t *)name, nl);
    msg_t **v = kept(cl, n, &k);
    if (n > 0) /* what was routed for it before and comes later: cl_adopt_late */
        cl->links->peers[n].own_asked_at = an_wall_ms();
    cl_adopt_collected(cl, name, v, k, 0);
    free(v);
    uint32_t asked = 0;
    for (int i = 1; i < CL_MAX_NODES; i++) {
        cl_peer_t *p = &cl->links->peers[i];
        if (!cl->nodes[i].member || p->conn == NULL || !p->conn->up ||
            strcmp(cl->nodes[i].name, name) == 0)
            continue;
        cl_enc_route(&p->conn->out, CL_F_ADOPT_ASK, (const uint8_t *)name, nl);
        if (!(p->conn->ev.events & EV_WRITE) && cl_conn_flush(cl, p->conn) < 0)
            continue; /* closed */
        asked++;
    }
    cl_adopt_expect(cl, name, asked);
    free(name);
}

static void done_task(cl_t *cl, void *arg)
{
    char *name = arg;
    if (cl->links != NULL) {
        uint16_t nl = (uint16_t)strlen(name);
        for (int i = 1; i < CL_MAX_NODES; i++) {
            cl_peer_t *p = &cl->links->peers[i];
            if (!cl->nodes[i].member || p->conn == NULL || !p->conn->up)
                continue;
            cl_enc_route(&p->conn->out, CL_F_ADOPT_DONE, (const uint8_t *)name, nl);
            if (!(p->conn->ev.events & EV_WRITE))
                cl_conn_flush(cl, p->conn);
        }
        int n = find_node(cl, (const uint8_t *)name, nl);
        if (n > 0 && !cl_repl_on(cl)) /* replicated: at the watch's end (end_task) */
            release(cl, n, NULL);
    }
    free(name);
}

typedef struct {
    int64_t lease;
    cl_buf_t ids;
    char name[];
} hand_over_t;

#define IDS_CHUNK 65536 /* ids per CL_F_ADOPT_IDS frame, in bytes (about) */

/* The ids in frames of IDS_CHUNK bytes or so, each cut after an id. */
static void send_ids(cl_buf_t *out, const char *name, uint16_t nl, const cl_buf_t *ids)
{
    for (size_t off = 0; off + 2 <= ids->len;) {
        size_t end = off;
        while (end + 2 <= ids->len && end - off < IDS_CHUNK)
            end += 2 + ((size_t)ids->p[end] << 8 | ids->p[end + 1]);
        if (end > ids->len)
            break; /* cannot happen: the adopter encoded them */
        uint32_t flen = (uint32_t)(1 + 2 + nl + (end - off));
        cl_buf_reserve(out, 4 + flen);
        uint8_t *p = out->p + out->len;
        p[0] = (uint8_t)(flen >> 24), p[1] = (uint8_t)(flen >> 16), p[2] = (uint8_t)(flen >> 8);
        p[3] = (uint8_t)flen, p[4] = CL_F_ADOPT_IDS, p[5] = (uint8_t)(nl >> 8), p[6] = (uint8_t)nl;
        memcpy(p + 7, name, nl);
        memcpy(p + 7 + nl, ids->p + off, end - off);
        out->len += 4 + flen;
        off = end;
    }
}

static void over_task(cl_t *cl, void *arg)
{
    hand_over_t *h = arg;
    const char *name = h->name;
    if (cl->links != NULL) {
        uint16_t nl = (uint16_t)strlen(name);
        for (int i = 1; i < CL_MAX_NODES; i++) {
            cl_peer_t *p = &cl->links->peers[i];
            if (!cl->nodes[i].member || p->conn == NULL || !p->conn->up)
                continue;
            send_ids(&p->conn->out, name, nl, &h->ids);
            cl_enc_route(&p->conn->out, CL_F_ADOPT_OVER, (const uint8_t *)name, nl);
            if (!(p->conn->ev.events & EV_WRITE))
                cl_conn_flush(cl, p->conn);
        }
    }
    cl_owner_adopted(cl, cl->conf->node, h->lease, h->ids.p, h->ids.len);
    cl_adopt_over(cl, name, 0);
    cl_buf_free(&h->ids);
    free(h);
}

static void end_task(cl_t *cl, void *arg)
{
    char *name = arg;
    int n = cl->links ? find_node(cl, (const uint8_t *)name, (uint16_t)strlen(name)) : -1;
    if (n > 0) /* replicated: every adopter of a share is done, or none lives */
        release(cl, n,
                cl_repl_on(cl)
                    ? NULL
                    : "its sessions were not adopted here, and no adopter asked for them");
    free(name);
}

static int post_name(cl_t *cl, void (*fn)(cl_t *, void *), const char *name)
{
    size_t l = strlen(name);
    char *s = an_malloc(l + 1);
    memcpy(s, name, l + 1);
    if (cl_post(cl, fn, s) == 0)
        return 0;
    free(s);
    return -1;
}

int cl_hand_ask(cl_t *cl, const char *name)
{
    return post_name(cl, ask_task, name);
}

void cl_hand_done(cl_t *cl, const char *name)
{
    post_name(cl, done_task, name);
}

void cl_hand_over(cl_t *cl, const char *name, int64_t lease, uint8_t *ids, size_t len)
{
    size_t l = strlen(name);
    hand_over_t *h = an_malloc(sizeof(*h) + l + 1);
    h->lease = lease;
    h->ids = (cl_buf_t){.p = ids, .len = len, .cap = len};
    memcpy(h->name, name, l + 1);
    if (cl_post(cl, over_task, h) == 0)
        return;
    cl_adopt_over(cl, name, 0);
    cl_buf_free(&h->ids);
    free(h);
}

void cl_hand_watch_end(cl_t *cl, const char *name)
{
    post_name(cl, end_task, name);
}
