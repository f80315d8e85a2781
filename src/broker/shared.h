/* shared.h -- shared subscriptions: "$share/{group}/{filter}".
 *
 * A group (name, filter) is one entry in the trie, at the real filter, whose
 * sub_ref_t carries SUB_SHARED and the group's address in `sid` (tagged with
 * SHARED_TAG, so it can never equal a session id).  When a topic matches it,
 * the router asks shared_pick() for one member, by the configured strategy.
 * Across a cluster, a group whose first MQTT session joins (or whose last
 * one leaves) is announced to the other nodes as "$share/g/f" through the
 * trie's local-route hook (trie_local_notify); a node that announced it is
 * one member (kind ROUTE_OWNER_NODE) of the group on the other nodes.
 * Groups and their member lists change only under the trie's write lock
 * (subscribe, unsubscribe, session end) and are read under its read lock, so
 * a group seen in a match stays valid until the lock is released.
 *
 * The groups of the server are a shared_set_t: a hash table keyed by
 * (name, filter) under a random SipHash key, so a SUBSCRIBE naming
 * thousands of groups finds each one in constant time (created on the
 * first join, freed by shared_free_all).
 */
#ifndef ANTENNA_SHARED_H
#define ANTENNA_SHARED_H

#include <stddef.h>
#include <stdint.h>

#include "trie.h"

#define SHARED_TAG (1ull << 63)

typedef struct shared_group_s shared_group_t;
typedef struct shared_set_s shared_set_t;

/* Add or update member `sub` of group (name, filter); creates the group and
 * its trie entry on first use.  Caller holds the trie write lock. */
void shared_join(trie_t *t, shared_set_t **groups, const uint8_t *name, size_t name_len,
                 const uint8_t *filter, size_t filter_len, const sub_ref_t *sub);
/* Remove member sid; frees the group and its trie entry when it is empty.
 * Caller holds the write lock.  Returns 1 when it was a member. */
int shared_leave(trie_t *t, shared_set_t **groups, const uint8_t *name, size_t name_len,
                 const uint8_t *filter, size_t filter_len, uint64_t sid);

/* Choose the member of the group behind `ref` (a SUB_SHARED trie entry) for
 * one message; never `exclude` (0 = none).  Caller holds the read lock.
 * Returns 0 and *out, or -1 when no member is eligible. */
int shared_pick(const sub_ref_t *ref, int strategy, const uint8_t *publisher, size_t publisher_len,
                const uint8_t *topic, size_t topic_len, uint64_t exclude, uint64_t *rng,
                sub_ref_t *out);
/* The same for a group named by (name, filter), for failover. */
int shared_pick_named(shared_set_t *groups, const uint8_t *name, size_t name_len,
                      const uint8_t *filter, size_t filter_len, int strategy, uint64_t exclude,
                      uint64_t *rng, sub_ref_t *out);

/* A cluster (router_deliver_shared): one of the group's MQTT sessions,
 * never a node, picked at random.  Read lock.  0 and *out, or -1. */
int shared_pick_local(shared_set_t *groups, const uint8_t *name, size_t name_len,
                      const uint8_t *filter, size_t filter_len, uint64_t *rng, sub_ref_t *out);
/* trie_local_notify(.., 1) for every group with a local member (the local
 * route hook was just set).  Write lock. */
void shared_announce_all(trie_t *t, shared_set_t *groups);

void shared_free_all(shared_set_t **groups);

#endif
