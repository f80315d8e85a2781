/* subidx.h -- a session's subscriptions found by filter in constant time.
 *
 * A session keeps its subscriptions in a dense array (sess_t.subs, nsubs:
 * iterated by persistence, the API and shared-subscription failover).
 * Finding one by its filter used to scan that array, so a SUBSCRIBE with
 * n filters cost O(n^2).  This index sits beside the array once it holds
 * more than SUBIDX_MIN entries (a device with a handful of subscriptions
 * pays nothing): an open-addressing table (linear probing, load at most
 * 1/2, doubled as it grows and halved when sparse, backward-shift deletion,
 * no tombstones) from the filter to its array slot.  The key is the filter
 * as subscribed, "$share/group/" included; filters are chosen by clients,
 * so they are hashed with SipHash under a random key per index and nobody
 * can make them collide on purpose.
 *
 * The array stays the owner of the entries; the caller appends or
 * swap-removes them and tells the index (subidx_added, subidx_removing).
 * Touched by the session's home worker only, like the session.
 */
#ifndef ANTENNA_SUBIDX_H
#define ANTENNA_SUBIDX_H

#include <stdint.h>

#include "sess.h"

/* Below this many subscriptions there is no index: a scan is as fast. */
#define SUBIDX_MIN 8

typedef struct subidx_s subidx_t;

/* Array index of the subscription to filter [f, f + len) among v[0..n),
 * or -1.  x may be NULL (no index yet: a scan). */
long subidx_find(const subidx_t *x, const sess_sub_t *v, uint32_t n, const uint8_t *f,
                 uint16_t len);
/* v[n - 1] was just appended: index it (building the index when n passes
 * SUBIDX_MIN, growing it when needed). */
void subidx_added(subidx_t **x, const sess_sub_t *v, uint32_t n);
/* v[i] is about to be removed by moving v[n - 1] into its place (n is the
 * count before the removal): forget it and follow the move.  The index goes
 * when fewer than SUBIDX_MIN / 2 entries are left. */
void subidx_removing(subidx_t **x, const sess_sub_t *v, uint32_t n, uint32_t i);
void subidx_free(subidx_t **x);
/* Slots of the table (0 without an index): for tests. */
uint32_t subidx_capacity(const subidx_t *x);

#endif
