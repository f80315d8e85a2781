/* trie.h -- the topic trie: subscriptions by topic filter, matched by topic.
 *
 * One node per topic level.  A node's named children sit in an open-addressing
 * hash table keyed by the level's bytes; the '+' and '#' children have their
 * own pointers, so matching a topic visits only nodes whose filter prefix
 * matches the topic so far (from each, the named child and the '+' child for
 * the next level, and the '#' child): the cost grows with the topic's depth
 * and the wildcard filters along it, not with the number of subscriptions.
 * Topics starting with '$' are not matched by a leading '+' or '#'
 * [MQTT-4.7.2-1].
 *
 * A subscriber is a sub_ref_t: an id, a tagged owner (its kind, and an
 * index within the kind) and its options.  The trie never looks inside a
 * subscriber, so the router decides what "delivering" means (router.h:
 * one table of owner kinds).
 *
 * Not thread-safe: the router guards it with a read-write lock (many workers
 * match at once; subscribe and unsubscribe take the write lock).
 */
#ifndef ANTENNA_TRIE_H
#define ANTENNA_TRIE_H

#include <stddef.h>
#include <stdint.h>

/* Route owner kinds (sub_ref_t.kind): who takes a message for a matched
 * subscriber.  Each kind is a row of the router's table (router.h). */
enum {
    ROUTE_OWNER_LOCAL = 0, /* an MQTT session; owner: its home worker index */
    ROUTE_OWNER_CONSUMER,  /* an internal consumer (router.h); sid: ROUTE_SID_CONSUMER
                            * | its address; owner unused (0) */
    ROUTE_OWNER_NODE,      /* a remote node (a cluster module); owner: the node's
                            * index; sid: ROUTE_SID_NODE | that index */
    ROUTE_OWNER_KINDS = 4  /* size of the table */
};

/* Ids of subscribers that are not sessions: tagged so that they never equal
 * a session id (a counter from 1) nor a shared group (SHARED_TAG, bit 63,
 * shared.h).  One id per consumer and per node, so that overlapping
 * filters of one of them merge into one delivery, as for a session. */
#define ROUTE_SID_CONSUMER (1ull << 62)
#define ROUTE_SID_NODE (1ull << 61)

typedef struct {
    uint64_t sid;        /* session id (unique, never reused), or a tagged id */
    uint32_t subid;      /* MQTT 5 subscription identifier, 0 = none */
    uint16_t owner;      /* index within the kind: the session's worker, a node */
    uint8_t opts;        /* the MQTT 5 options byte: bits 0-1 granted QoS, 2 No
                     * Local, 3 Retain As Published, 4-5 Retain Handling;
                     * bit 6 (SUB_SHARED): a shared group, see shared.h */
    uint8_t kind;        /* ROUTE_OWNER_* (in what was the padding byte) */
    struct sess_s *sess; /* the session (NULL for a group's own entry): valid
                          * only under the trie lock, which every session
                          * takes to leave the trie before it is freed; read
                          * by other workers for its immutable client id and
                          * its atomic `durable` flag only */
} sub_ref_t;

_Static_assert(sizeof(sub_ref_t) == 24, "sub_ref_t grew: every subscription pays for it");

#define SUB_SHARED 0x40

typedef struct trie_s trie_t;

trie_t *trie_new(void);
void trie_free(trie_t *t);

/* Add sub for filter (bytes, not NUL terminated, already validated).  When
 * the same sid is already subscribed to that exact filter its owner and opts
 * are replaced.  Returns 1 when added, 0 when replaced, -1 on out of memory
 * (the trie is then exactly as before; also -1 for a level over 65535 bytes,
 * which no valid filter has). */
int trie_insert(trie_t *t, const uint8_t *filter, size_t len, const sub_ref_t *sub);

/* The trie's own copy of an exact filter (no '+' or '#') that has a
 * subscriber, or NULL (a wildcard filter, or none subscribed).  The bytes
 * stay where they are as long as the filter has a subscriber: a
 * subscription keeps them instead of a copy of its own (sess.h).  Under
 * the lock, read or write. */
const uint8_t *trie_exact_key(const trie_t *t, const uint8_t *filter, size_t len);

/* Remove sid from filter; prunes nodes left empty.  Returns 1 when removed,
 * 0 when it was not subscribed. */
int trie_remove(trie_t *t, const uint8_t *filter, size_t len, uint64_t sid);

/* Calls cb once for every (filter, subscriber) pair matching topic.  A
 * subscriber with overlapping filters is reported once per filter: the caller
 * merges (highest QoS wins).  cb must not modify the trie.  Allocates
 * nothing and uses constant stack at any topic depth; several threads may
 * match at once (read lock). */
typedef void (*trie_match_cb)(void *ud, const sub_ref_t *sub);
void trie_match(const trie_t *t, const uint8_t *topic, size_t len, trie_match_cb cb, void *ud);

/* The local-route hook (a cluster module, router.h): fn(ud, filter, len, 1)
 * when a filter gets its first subscriber of kind ROUTE_OWNER_LOCAL (an
 * MQTT session; a shared group's entry is not one, shared.c announces its
 * "$share/g/f" through trie_local_notify) and fn(ud, filter, len, 0) when
 * it loses its last one; called inside trie_insert / trie_remove, under the
 * caller's write lock, so the calls come in the order of the changes.
 * Setting the hook calls fn(.., 1) at once for every filter that has a
 * local subscriber already.  Costs nothing while no hook is set (and then
 * a scan of the node's subscribers only until another local one is found,
 * bounded by the non-local ones: nodes and consumers). */
typedef void (*trie_local_fn)(void *ud, const uint8_t *filter, size_t len, int up);
void trie_set_local_hook(trie_t *t, trie_local_fn fn, void *ud);
/* fn(ud, filter, len, 1) for every exact filter (no '+' or '#') that has a
 * local subscriber now, in no particular order: what the hook announced
 * of them and did not take back.  The cluster's link thread reads them
 * here at a route sync instead of keeping a copy of each (cl_route.c).
 * fn must not modify the trie.  Under the lock, read or write. */
void trie_walk_exact_local(const trie_t *t, trie_local_fn fn, void *ud);
/* Call the hook (when set) for a route that is not a trie entry of its own:
 * a shared group's "$share/g/f" gaining its first / losing its last local
 * member (shared.c).  Under the write lock. */
void trie_local_notify(trie_t *t, const uint8_t *filter, size_t len, int up);

/* Number of (filter, subscriber) pairs, and of nodes (for metrics, tests).
 * The root counts: an empty trie, new or emptied by removes, has 1 node. */
size_t trie_count(const trie_t *t);
size_t trie_nodes(const trie_t *t);

/* Topic matching of one filter against one topic, without a trie (retained
 * messages, tests).  Same rules as trie_match: '+' is exactly one level (an
 * empty one too), '#' the parent level and any below ("a/#" matches "a"),
 * empty levels count ("a//b", "/a"), and a topic starting with '$' is not
 * matched by a filter starting with '+' or '#'.  A zero-length topic or
 * filter is one empty level.  Returns 1 on match. */
int topic_matches(const uint8_t *filter, size_t flen, const uint8_t *topic, size_t tlen);

#endif
