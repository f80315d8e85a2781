/* cl_recent.c -- the client ids of recent adoptions, and who claimed them
 * (cl_int.h; docs/cluster.md "A dead node's sessions").
 *
 * When a survivor adopts a dead member's sessions it claims their client
 * ids in etcd, then the clients come back, all at once, through a load
 * balancer: about one in (members) lands on the adopter, whose claim finds
 * the key its own; the others land elsewhere, whose claim finds the
 * adopter and asks it to hand the session over.  Each of those first
 * claims is an etcd txn whose answer is known in advance, and etcd's CPU
 * is what bounds the reconnection (docs/benchmarks.md).  So the adopter
 * keeps the ids it claimed (owner: itself, with the lease it claimed them
 * under) and sends them to the members with the end of the adoption
 * (CL_F_ADOPT_IDS, cl_hand.c), which keep them with the adopter as owner.
 * A resuming CONNECT whose id is here skips the claim (cl_owner.c's
 * own_gate): on the adopter it resumes the session at once (the session
 * still here, the lease the same); elsewhere the take-over is asked of the
 * adopter at once.  An id is used once (taken out), and taken out when its
 * session leaves the adopter (handed over, released); a table is dropped
 * after CL_RECENT_MS.  Nothing is promised from it: a take that finds the
 * session gone answers as before and the requester claims as usual.
 *
 * A table: the ids as received (u16 len | id, each), and an open-addressed
 * set of offsets into it.  At most CL_RECENT_TABLES at once (a newer one
 * replaces the oldest).  Threads: added by the adopter and link threads,
 * looked up by the workers, all under mu; `count` lets a CONNECT skip the
 * lock while nothing is kept (the usual case).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl_int.h"
#include "util.h"

#define CL_RECENT_TABLES 4
#define CL_RECENT_MS 60000 /* a table is dropped this long after the adoption */
#define SLOT_EMPTY 0u
#define SLOT_GONE 1u /* taken out (offsets are >= 2: +2) */

typedef struct {
    char owner[CL_NAME_MAX];
    int64_t lease; /* the owner's lease (this node's own claims), or 0 */
    uint64_t until;
    uint8_t *ids;
    size_t len;
    uint32_t *slot, mask, live;
} rc_table_t;

struct cl_recent_s {
    pthread_mutex_t mu;
    rc_table_t t[CL_RECENT_TABLES];
    _Atomic uint32_t count; /* tables in use */
};

static uint32_t rc_hash(const uint8_t *id, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ id[i]) * 16777619u;
    return h ^ (h >> 15);
}

static void table_free(rc_table_t *t)
{
    free(t->ids);
    free(t->slot);
    memset(t, 0, sizeof(*t));
}

cl_recent_t *cl_recent_new(void)
{
    cl_recent_t *r = an_calloc(1, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void cl_recent_free(cl_recent_t *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < CL_RECENT_TABLES; i++)
        table_free(&r->t[i]);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Under mu: drop the tables whose time passed; the count again. */
static void expire(cl_recent_t *r, uint64_t now)
{
    uint32_t n = 0;
    for (int i = 0; i < CL_RECENT_TABLES; i++) {
        if (r->t[i].ids != NULL && (r->t[i].until <= now || r->t[i].live == 0))
            table_free(&r->t[i]);
        n += r->t[i].ids != NULL;
    }
    atomic_store(&r->count, n);
}

/* The slot holding id in t, or the first free one met (-1 when full). */
static int64_t find(const rc_table_t *t, const uint8_t *id, size_t len, int for_insert)
{
    uint32_t i = rc_hash(id, len) & t->mask;
    for (uint32_t probes = 0; probes <= t->mask; probes++, i = (i + 1) & t->mask) {
        uint32_t s = t->slot[i];
        if (s == SLOT_EMPTY)
            return for_insert ? (int64_t)i : -1;
        if (s == SLOT_GONE)
            continue;
        const uint8_t *p = t->ids + (s - 2);
        size_t l = (size_t)p[0] << 8 | p[1];
        if (l == len && memcmp(p + 2, id, len) == 0)
            return for_insert ? -1 : (int64_t)i; /* a duplicate is not added twice */
    }
    return -1;
}

void cl_recent_add(cl_recent_t *r, const char *owner, int64_t lease, const uint8_t *ids, size_t len,
                   uint64_t now)
{
    if (r == NULL || len == 0 || len > UINT32_MAX - 2)
        return;
    rc_table_t t = {.lease = lease, .until = now + CL_RECENT_MS, .len = len};
    snprintf(t.owner, sizeof(t.owner), "%s", owner);
    uint32_t n = 0;
    for (size_t off = 0; off + 2 <= len; n++)
        off += 2 + ((size_t)ids[off] << 8 | ids[off + 1]);
    uint32_t cap = 16;
    while (cap < 2u * n && cap < (1u << 30))
        cap <<= 1;
    t.mask = cap - 1;
    t.slot = an_calloc(cap, sizeof(*t.slot));
    t.ids = an_malloc(len);
    memcpy(t.ids, ids, len);
    for (size_t off = 0; off + 2 <= len;) {
        size_t l = (size_t)ids[off] << 8 | ids[off + 1];
        if (off + 2 + l > len || l == 0)
            break; /* malformed tail: what came before is kept */
        int64_t i = find(&t, ids + off + 2, l, 1);
        if (i >= 0) {
            t.slot[i] = (uint32_t)off + 2;
            t.live++;
        }
        off += 2 + l;
    }
    pthread_mutex_lock(&r->mu);
    int k = 0; /* a free one, else the oldest */
    for (int i = 0; i < CL_RECENT_TABLES; i++) {
        if (r->t[i].ids == NULL) {
            k = i;
            break;
        }
        if (r->t[i].until < r->t[k].until)
            k = i;
    }
    table_free(&r->t[k]);
    r->t[k] = t;
    expire(r, now);
    pthread_mutex_unlock(&r->mu);
}

int cl_recent_has(cl_recent_t *r, const char *id, size_t len, uint64_t now, const char *owner)
{
    if (r == NULL || atomic_load_explicit(&r->count, memory_order_relaxed) == 0)
        return 0;
    int found = 0;
    pthread_mutex_lock(&r->mu);
    for (int k = 0; k < CL_RECENT_TABLES && !found; k++) {
        const rc_table_t *t = &r->t[k];
        found = t->ids != NULL && t->until > now && strcmp(t->owner, owner) == 0 &&
                find((rc_table_t *)t, (const uint8_t *)id, len, 0) >= 0;
    }
    pthread_mutex_unlock(&r->mu);
    return found;
}

int cl_recent_take(cl_recent_t *r, const char *id, size_t len, uint64_t now,
                   char owner[CL_NAME_MAX], int64_t *lease)
{
    if (r == NULL || atomic_load_explicit(&r->count, memory_order_relaxed) == 0)
        return 0;
    int found = 0;
    pthread_mutex_lock(&r->mu);
    for (int k = 0; k < CL_RECENT_TABLES && !found; k++) {
        rc_table_t *t = &r->t[k];
        if (t->ids == NULL || t->until <= now)
            continue;
        int64_t i = find(t, (const uint8_t *)id, len, 0);
        if (i < 0)
            continue;
        t->slot[i] = SLOT_GONE;
        t->live--;
        memcpy(owner, t->owner, CL_NAME_MAX);
        *lease = t->lease;
        found = 1;
    }
    expire(r, now);
    pthread_mutex_unlock(&r->mu);
    return found;
}
