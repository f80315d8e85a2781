/* retain.h -- retained messages, one per topic, matched by topic filter.
 *
 * A tree with one node per topic level (children in a hash table), a
 * message at the node of its topic.  retain_match() walks only the
 * branches a filter can match ('+' visits every child of one level, '#' a
 * whole subtree), so a subscription to a narrow filter does not scan every
 * retained message.  Topics starting with '$' are not matched by a leading
 * wildcard.  Guarded by its own mutex: any worker may set or match.
 */
#ifndef ANTENNA_RETAIN_H
#define ANTENNA_RETAIN_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h"

typedef struct retain_s retain_t;

retain_t *retain_new(void);
void retain_free(retain_t *r);
/* Store m (a reference is taken) as the retained message of its topic, or
 * clear the topic when m has an empty payload. */
void retain_set(retain_t *r, msg_t *m);
/* The same, refusing a new topic (-1, nothing changed) while max (> 0)
 * messages are retained; replacing or clearing a retained topic is always
 * done (0).  limits.max_retained. */
int retain_set_max(retain_t *r, msg_t *m, size_t max);
/* Calls cb with a reference the callee must unref, for each retained message
 * matching filter.  cb runs after the lock is released. */
typedef void (*retain_cb)(void *ud, msg_t *m);
void retain_match(retain_t *r, const uint8_t *filter, size_t len, retain_cb cb, void *ud);
/* Every retained message whose topic starts with prefix (len 0: all,
 * '$' topics included), with the same reference rule as retain_match.
 * For the management API: a walk of the whole tree under the mutex. */
void retain_walk(retain_t *r, const uint8_t *prefix, size_t len, retain_cb cb, void *ud);
size_t retain_count(retain_t *r);
/* How many of retain_count's messages have a topic starting with '$' (the
 * broker's $SYS tree): the dashboard's figure leaves them out. */
size_t retain_count_dollar(retain_t *r);
/* Remove every retained message expired at now (ms); cb gets a reference
 * to each one removed (after the lock is released).  Cheap when no retained
 * message has an expiry.  Returns how many were removed. */
size_t retain_expire(retain_t *r, uint64_t now, retain_cb cb, void *ud);

#endif
