/* persist_held.h -- what waits for a store commit on one worker, and the
 * rule that releases it (used by persist.c; pure, unit-tested alone).
 *
 * A worker fills one store batch per loop turn and submits it at the end
 * of the turn; the commits come back one by one, in submission order
 * (WM_COMMITTED).  Whatever must not happen before the turn's writes are
 * on disk (an acknowledgement, the routing of a stored message, the send
 * of a QoS 2 packet whose state was recorded) is pushed here, tagged with
 * the number of the batch being filled, and popped in arrival order once
 * that batch's commit came back.
 *
 * Numbering: batches are numbered from 0 (batch_no is the one being
 * filled: every earlier number was submitted), commits are counted from 1
 * (committed_no), so batch k is committed once committed_no > k.  Its items
 * leave then and not one commit earlier: releasing them when committed_no
 * == k acknowledged messages whose own batch was still on its way to the
 * disk, and a kill -9 lost them (issue 13, item 0).  A batch the store
 * refused to queue (closing) has no commit of its own: its items are marked
 * failed and the next batch takes its number, so they leave, refused, with
 * that batch's commit.
 *
 * One worker owns a ring; nothing here locks.  Items are popped by value:
 * releasing one may hold new ones (a routed QoS 2 message to a durable
 * session holds its send), which may grow or wrap the ring.
 */
#ifndef ANTENNA_PERSIST_HELD_H
#define ANTENNA_PERSIST_HELD_H

#include <stddef.h>
#include <stdint.h>

struct endpoint_s;
struct msg_s;
struct route_target_s;

/* One held thing: an acknowledgement (ep, sid, type, pid, reason), a route
 * (m, t, nt) or a QoS 2 send (sid, pid). */
typedef struct {
    uint64_t batch;
    struct endpoint_s *ep; /* ack: NULL once the endpoint was freed */
    uint64_t sid;          /* send: the session whose QoS 2 packet waits;
                                * ack: the endpoint's session */
    struct msg_s *m;       /* route */
    struct route_target_s *t;
    uint64_t ticket; /* route: its copies' ticket at the node row (router.h DLV_TICKET) */
    uint32_t nt;
    uint16_t pid;
    uint8_t type; /* ack: EP_ACK_PUBACK/PUBREC/PUBCOMP; else 0 */
    uint8_t reason;
    uint8_t failed;                /* its batch could not be submitted */
    int32_t rc;                    /* in the sink stage: the commit's result */
    uint64_t sink_from, sink_wait; /* ack: the worker's "ack: sink" records
                                    * (sink_from, sink_wait] it waits for
                                    * (persist.c, persist_sink_ack_emitted) */
} held_item_t;

typedef struct persist_held_s {
    held_item_t *v;
    size_t head, len, cap; /* ring; cap is 0 or a power of two */
    size_t routes;         /* route items in the ring (kept by the user) */
    uint64_t batch_no;     /* the batch being filled */
    uint64_t committed_no; /* commits that came back */
    uint64_t module_puts;  /* persist_put_reserve calls (a module's records) */
    /* acknowledgements after a sink: records numbered by the worker, the
     * number up to which all are confirmed, the last one given to a held
     * acknowledgement, the ones confirmed above the first (sorted), and
     * the acknowledgements committed but waiting for a confirmation (the
     * sink stage, in order per endpoint) */
    uint64_t sink_emitted, sink_confirmed, sink_taken;
    uint64_t *sink_ooo;
    size_t nsink_ooo, cap_sink_ooo;
    struct persist_held_s *after_sink;
} held_ring_t;

/* The release rule (see the top of this file). */
static inline int held_batch_is_committed(uint64_t batch, uint64_t committed_no)
{
    return batch < committed_no;
}

/* A zeroed item of the batch being filled, at the end of the ring; valid
 * until the next push. */
held_item_t *held_push(held_ring_t *h);
/* The batch being filled was queued: the next one gets the next number. */
void held_submitted(held_ring_t *h);
/* The batch being filled could not be queued: its items are marked failed
 * and the next batch keeps its number. */
void held_submit_failed(held_ring_t *h);
/* A commit came back (the oldest batch submitted); returns committed_no. */
uint64_t held_committed(held_ring_t *h);
/* The oldest item, when its batch is committed: copied to *out, removed,
 * 1.  Otherwise 0 (everything behind it waits too: order is kept). */
int held_pop(held_ring_t *h, held_item_t *out);
/* The oldest item whatever its batch (the sink stage): 1, or 0 when empty. */
int held_shift(held_ring_t *h, held_item_t *out);
/* Items in the ring, and the i-th oldest. */
static inline size_t held_len(const held_ring_t *h)
{
    return h->len;
}
static inline held_item_t *held_at(held_ring_t *h, size_t i)
{
    return &h->v[(h->head + i) & (h->cap - 1)];
}
/* Endpoint ep is being freed: its acknowledgements will not be sent. */
void held_forget_endpoint(held_ring_t *h, const struct endpoint_s *ep);
/* Free the ring's storage (the items' references are the caller's: take
 * them with held_at first). */
void held_free(held_ring_t *h);

#endif
