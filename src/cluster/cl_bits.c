/* cl_bits.c -- exact routes as a plain bit filter built by their owner
 * (cl_link_int.h; rbits.h; docs/cluster.md "Routes").
 *
 * Everything here runs on the link thread.
 *
 * The key.  A receiver tests a publish's topic against the owner's bits,
 * so both must hash under one key: the cluster's route key, derived from
 * the cluster secret and name (HMAC-SHA256), installed as the server's
 * route_key at init (router_route_exact, the exact table and the counting
 * Bloom filters use it too: a publish still hashes its topic once).
 * ROUTE_BITS_WANT carries a check of it (a SipHash of a constant under
 * the key): a peer with another key is sent strings.
 *
 * Negotiation (cluster.route_bits, default on).  A link that comes up
 * sends ROUTE_BITS_WANT first: "send me your exact routes as bits".  A
 * node that ships bits (it has more than cluster.route_bloom_above exact
 * filters) waits, before its route sync, for the peer's first frame: the
 * WANT of a node that takes bits, or the SYNC_BEGIN (or ACK) of one that
 * does not know the frame (it ignores an unknown optional frame and sends
 * its own sync at once): no strings are sent for nothing.  A node with
 * fewer exact filters syncs at once as before and notes a later WANT.
 *
 * The owner (L->own): a counting filter (rbcount_t) of the exact filters
 * this node announces, built when their count passes
 * cluster.route_bloom_above, rebuilt at the new count when it passes 6/5
 * of what it was sized for or falls under a quarter (a new size: the
 * whole bitmap goes again), dropped when the count falls under half the
 * threshold (every link that took bits gets a full sync of strings).
 * local_apply (cl_route.c) hands each exact change here: its counters
 * change and the positions that flipped are gathered (L->own_delta); at
 * the end of the run of tasks cl_route_marks writes ONE ROUTE_BITS_DELTA
 * (or the whole ROUTE_BITS after a resize) into each link that takes bits,
 * before the run's ROUTE_MARK: the route barrier holds as with strings.
 *
 * The receiver: ROUTE_BITS replaces whatever it kept of the peer's exact
 * routes by the bits (router_node_bits_set; inside a sync, at SYNC_END),
 * ROUTE_BITS_DELTA sets and clears positions (router_node_bits_apply):
 * no hashing, no per-route state.  A delta that does not fit (a filter of
 * another size) asks for a full sync (ROUTE_RESYNC).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cl_link_int.h"
#include "log.h"
#include "rbits.h"
#include "router.h"

_Static_assert(CL_BITS_MAX_BLOCKS == RBITS_MAX_BLOCKS, "the wire's bound is the filter's");
_Static_assert(RBITS_BLOCK == 64, "a ROUTE_BITS block is 64 bytes");

void cl_bits_init(cl_t *cl)
{
    cl_links_t *L = cl->links;
    static const char label[] = "antenna cluster route key/";
    uint8_t data[sizeof(label) + 64], mac[32];
    size_t nl = strlen(cl->conf->name);
    memcpy(data, label, sizeof(label) - 1);
    memcpy(data + sizeof(label) - 1, cl->conf->name, nl);
    unsigned int ml = sizeof(mac);
    const char *secret = cl->conf->secret;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), data, sizeof(label) - 1 + nl, mac, &ml);
    uint64_t k[2] = {0, 0};
    for (int i = 0; i < 16; i++)
        k[i / 8] |= (uint64_t)mac[i] << (8 * (i % 8));
    /* main thread, before the link thread and any remote route */
    memcpy(cl->srv->route_key, k, sizeof(k));
    L->key_check = an_siphash(k, "antenna route bits", 18);
    L->bits = cl->conf->route_bits;
}

void cl_bits_free(cl_t *cl)
{
    cl_links_t *L = cl->links;
    rbcount_free(L->own);
    L->own = NULL;
    free(L->own_delta);
    L->own_delta = NULL;
    L->own_ndelta = L->own_capdelta = 0;
    free(L->own_scratch);
    L->own_scratch = NULL;
    free(L->in_scratch);
    L->in_scratch = NULL;
    L->in_capscratch = 0;
}

/* ---- the owner ---- */

static void own_build(cl_t *cl)
{
    cl_links_t *L = cl->links;
    uint64_t sized = L->own_exact;
    /* every exact filter this node announces, read from the trie: as of
     * change own_seq, which may be ahead of the one being applied (the
     * filter counts what it holds: a walk that found many more than it
     * was sized for builds again at that size; bounded, as the walks
     * race with subscribers) */
    for (int tries = 0; tries < 4; tries++) {
        rbcount_free(L->own);
        L->own = rbcount_new(sized);
        L->own_seq = cl_route_local_exact(cl, L->own);
        if (!rbcount_misfit(L->own->sized, L->own->n))
            break;
        sized = L->own->n;
    }
    free(L->own_scratch); /* sized for the old filter */
    L->own_scratch = NULL;
    L->own_ndelta = 0;
    L->own_full_due = 1;
    L->own_strings_due = 0;
}

void cl_bits_local(cl_t *cl, int up, uint64_t h, uint64_t seq)
{
    cl_links_t *L = cl->links;
    uint64_t above = cl->conf->route_bloom_above;
    L->own_scratch_fresh = 0;
    if (up)
        L->own_exact++;
    else if (L->own_exact > 0)
        L->own_exact--;
    if (!L->bits)
        return;
    if (L->own == NULL) {
        if (above != 0 && L->own_exact > above)
            own_build(cl);
        return;
    }
    if (above == 0 || L->own_exact * 2 < above) { /* few again: strings */
        rbcount_free(L->own);
        L->own = NULL;
        L->own_ndelta = 0;
        L->own_full_due = 0;
        L->own_strings_due = 1;
        return;
    }
    if (seq <= L->own_seq)
        return; /* own_build read it from the trie already */
    uint32_t flips[RBITS_K];
    int nf = up ? rbcount_add(L->own, h, flips) : rbcount_del(L->own, h, flips);
    if (rbcount_misfit(L->own->sized, L->own->n)) { /* n: as of this change */
        own_build(cl);
        return;
    }
    if (L->own_full_due || nf == 0)
        return; /* the whole bitmap goes anyway / nothing flipped */
    if (L->own_ndelta + (size_t)nf > L->own_capdelta) {
        L->own_capdelta = AN_MAX(2 * L->own_capdelta, (size_t)256);
        L->own_delta = an_realloc(L->own_delta, L->own_capdelta * sizeof(*L->own_delta));
    }
    for (int i = 0; i < nf; i++)
        L->own_delta[L->own_ndelta++] = flips[i];
}

int cl_bits_out(const cl_t *cl, const cl_conn_t *c)
{
    return c->bits_ok && cl->links->own != NULL;
}

/* The whole bitmap into c's output. */
static void send_full(cl_t *cl, cl_conn_t *c)
{
    cl_links_t *L = cl->links;
    if (L->own_scratch == NULL || L->own_scratch_fresh == 0) {
        if (L->own_scratch == NULL)
            L->own_scratch = an_malloc((size_t)L->own->nblocks * RBITS_BLOCK);
        rbcount_bits(L->own, L->own_scratch);
        L->own_scratch_fresh = 1; /* until the next change (cl_bits_marks_done) */
    }
    cl_enc_bits(&c->out, L->own->nblocks, L->own_exact, L->own_scratch);
}

void cl_bits_sync(cl_t *cl, cl_conn_t *c)
{
    send_full(cl, c);
}

void cl_bits_mark(cl_t *cl, cl_conn_t *c)
{
    cl_links_t *L = cl->links;
    if (!c->bits_ok)
        return;
    if (L->own_strings_due) {
        cl_route_sync(cl, c); /* strings again: replaces the bits there */
        return;
    }
    if (L->own == NULL)
        return;
    if (L->own_full_due) {
        send_full(cl, c);
        return;
    }
    if (L->own_ndelta == 0)
        return;
    /* each flipped position with its value now (a position flipped twice
     * in the run is sent twice, with the same final value) */
    for (size_t i = 0; i < L->own_ndelta; i++) {
        uint32_t p = L->own_delta[i] & RBITS_POS_MASK;
        L->own_delta[i] = p | (rbcount_bit(L->own, p) ? RBITS_POS_SET : 0);
    }
    cl_enc_bits_delta(&c->out, L->own->nblocks, L->own_exact, L->own_delta, L->own_ndelta);
}

void cl_bits_marks_done(cl_t *cl)
{
    cl_links_t *L = cl->links;
    L->own_ndelta = 0;
    L->own_full_due = 0;
    L->own_strings_due = 0;
    L->own_scratch_fresh = 0;
}

/* ---- negotiation ---- */

void cl_bits_link_up(cl_t *cl, cl_conn_t *c)
{
    cl_links_t *L = cl->links;
    c->bits_ok = 0;
    c->route_wait = 0;
    if (L->bits) {
        cl_enc_u64(&c->out, CL_F_ROUTE_BITS_WANT, L->key_check);
        if (L->own != NULL) { /* bits or strings: the peer's first frame says */
            c->route_wait = 1;
            return;
        }
    }
    cl_route_sync(cl, c);
}

void cl_bits_first_frame(cl_t *cl, cl_conn_t *c, uint8_t type, const uint8_t *body, uint32_t len)
{
    uint64_t v;
    c->route_wait = 0;
    if (type == CL_F_ROUTE_BITS_WANT && cl_dec_ack(body, len, &v) == 0 && v == cl->links->key_check)
        c->bits_ok = 1;
    cl_route_sync(cl, c);
}

int cl_bits_want(cl_t *cl, cl_conn_t *c, const uint8_t *body, uint32_t len)
{
    cl_links_t *L = cl->links;
    uint64_t v;
    if (cl_dec_ack(body, len, &v) < 0)
        return -1;
    if (!L->bits || c->bits_ok)
        return 0;
    if (v != L->key_check) {
        log_limited(60000, AN_LOG_WARN,
                    "cluster: %s derives another route key (another secret or name?): its exact "
                    "routes go to it as strings",
                    cl->nodes[c->idx].name);
        return 0;
    }
    c->bits_ok = 1;
    if (L->own != NULL) /* it had them as strings: the bits replace them */
        send_full(cl, c);
    return 0;
}

/* ---- the receiver ---- */

static void bits_stat(cl_t *cl, cl_peer_t *p, int idx)
{
    size_t bytes;
    uint64_t sized;
    router_node_exact_info(cl->srv, (uint16_t)idx, &bytes, &sized);
    CL_STAT_SET(cl->lstats[idx].bloom_bytes, bytes);
    CL_STAT_SET(cl->lstats[idx].bits_in, p->bits);
}

void cl_bits_sync_end(cl_t *cl, cl_peer_t *p, int idx)
{
    rbits_t *b = p->sync_bits;
    /* its pairs of the exact table: only while it was kept there (the
     * drop scans the whole table: not for each resize of its bits) */
    int had_pairs = !p->bits && p->bloom_sized == 0 && p->nexact > 0;
    p->sync_bits = NULL;
    p->nexact = b->n;
    p->bloom_sized = 0;
    p->bits = 1;
    router_node_bits_set(cl->srv, (uint16_t)idx, b, had_pairs);
    bits_stat(cl, p, idx);
}

static void ask_resync(cl_t *cl, cl_peer_t *p, int idx)
{
    if (p->resync_asked || p->conn == NULL || !p->conn->up)
        return;
    p->resync_asked = 1;
    cl_enc_empty(&p->conn->out, CL_F_ROUTE_RESYNC);
    CL_STAT_ADD(cl->lstats[idx].resyncs, 1);
}

int cl_bits_recv(cl_t *cl, cl_peer_t *p, uint8_t type, const uint8_t *body, uint32_t len)
{
    cl_links_t *L = cl->links;
    int idx = (int)(p - L->peers);
    uint32_t blocks;
    uint64_t routes;
    cl_route_work(cl, 1 + len / (4 * RBITS_K)); /* ~ the routes a delta changes */
    if (type == CL_F_ROUTE_BITS) {
        const uint8_t *bits;
        if (cl_dec_bits(body, len, &blocks, &routes, &bits) < 0)
            return -1;
        rbits_t *b = rbits_new(blocks, bits);
        b->n = routes;
        if (p->syncing) { /* SYNC_END swaps it in with the rest */
            rbits_free(p->sync_bits);
            p->sync_bits = b;
            return 0;
        }
        p->sync_bits = b;
        cl_bits_sync_end(cl, p, idx);
        CL_STAT_SET(cl->lstats[idx].routes, cl_route_count(p));
        return 0;
    }
    const uint8_t *ents;
    size_t n;
    if (cl_dec_bits_delta(body, len, &blocks, &routes, &ents, &n) < 0)
        return -1;
    if (p->syncing) { /* not written inside a sync; handled */
        rbits_t *b = p->sync_bits;
        if (b == NULL || b->nblocks != blocks)
            return 0; /* the sync's ROUTE_BITS follows with them */
        for (size_t i = 0; i < n; i++) {
            uint32_t e = cl_bits_ent(ents, i);
            (void)rbits_put(b, e & RBITS_POS_MASK, (e & RBITS_POS_SET) != 0);
        }
        b->n = routes;
        return 0;
    }
    if (n > L->in_capscratch) {
        L->in_capscratch = AN_MAX(n, 2 * L->in_capscratch);
        L->in_scratch = an_realloc(L->in_scratch, L->in_capscratch * sizeof(*L->in_scratch));
    }
    for (size_t i = 0; i < n; i++)
        L->in_scratch[i] = cl_bits_ent(ents, i);
    if (!p->bits ||
        router_node_bits_apply(cl->srv, (uint16_t)idx, blocks, routes, L->in_scratch, n) < 0) {
        log_limited(10000, AN_LOG_WARN,
                    "cluster: %s sent bit-filter changes that do not fit its filter here: asking "
                    "for its routes again",
                    cl->nodes[idx].name);
        ask_resync(cl, p, idx);
        return 0;
    }
    p->nexact = routes;
    CL_STAT_SET(cl->lstats[idx].routes, cl_route_count(p));
    return 0;
}
