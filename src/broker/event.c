/* event.c -- the registry of broker events (see event.h).
 *
 * A fixed table in the server context: EVENT_MAX_HANDLERS slots per kind
 * and a bit per kind saying whether any slot is taken.  Written by the main
 * thread before the workers start, read-only afterwards (event_freeze), so
 * the workers read it without a lock: thread creation orders the writes
 * before every read.
 */
#include "event.h"

#include <string.h>

#include "conf.h"

int event_listen(event_bus_t *b, event_kind_t kind, event_fn fn, void *user)
{
    if (b->frozen || (unsigned)kind >= EVENT_COUNT || fn == NULL ||
        b->n[kind] >= EVENT_MAX_HANDLERS)
        return -1;
    b->h[kind][b->n[kind]++] = (event_handler_t){fn, user};
    b->wanted |= 1u << kind;
    b->all_msgs |= 1u << kind;
    if (kind == EVENT_MESSAGE_DROPPED)
        b->drops = UINT32_MAX;
    return 0;
}

int event_listen_drops(event_bus_t *b, uint32_t reasons, event_fn fn, void *user)
{
    uint32_t had = b->drops;
    if (event_listen(b, EVENT_MESSAGE_DROPPED, fn, user) < 0)
        return -1;
    b->drops = had | reasons;
    return 0;
}

int event_listen_msgs(event_bus_t *b, event_kind_t kind, uint8_t msg_flags, event_fn fn, void *user)
{
    if (msg_flags == 0)
        return event_listen(b, kind, fn, user);
    if (b->frozen || (unsigned)kind >= EVENT_COUNT || fn == NULL ||
        b->n[kind] >= EVENT_MAX_HANDLERS)
        return -1;
    b->h[kind][b->n[kind]++] = (event_handler_t){fn, user};
    b->wanted |= 1u << kind;
    b->msg_flags[kind] |= msg_flags;
    return 0;
}

void event_freeze(event_bus_t *b)
{
    b->frozen = 1;
}

void event_emit(struct worker_s *w, const event_bus_t *b, event_kind_t kind, const void *data)
{
    for (uint32_t i = 0; i < b->n[kind]; i++)
        b->h[kind][i].fn(w, kind, data, b->h[kind][i].user);
}

const char *event_name(event_kind_t kind)
{
    return (unsigned)kind < EVENT_COUNT ? conf_event_names[kind] : NULL;
}

int event_parse(const char *name)
{
    for (int i = 0; i < EVENT_COUNT; i++)
        if (strcmp(conf_event_names[i], name) == 0)
            return i;
    return -1;
}

const char *event_drop_reason_name(event_drop_reason_t r)
{
    static const char *const names[EVENT_DROP_REASONS] = {
        [EVENT_DROP_QUEUE_FULL] = "queue_full",
        [EVENT_DROP_EXPIRED] = "expired",
        [EVENT_DROP_ACL_DENIED] = "acl_denied",
        [EVENT_DROP_NO_SUBSCRIBERS] = "no_subscribers",
        [EVENT_DROP_QOS0_SLOW] = "qos0_slow_subscriber",
        [EVENT_DROP_QOS0_OFFLINE] = "qos0_offline",
        [EVENT_DROP_TOO_LARGE] = "too_large",
        [EVENT_DROP_PUBLISH_DENIED] = "publish_denied",
        [EVENT_DROP_PUBLISH_REFUSED] = "publish_refused",
        [EVENT_DROP_STORE_FAILED] = "store_failed",
    };
    return (unsigned)r < EVENT_DROP_REASONS ? names[r] : "?";
}
