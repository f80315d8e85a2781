/* api_conns.c -- deadlines and eviction for the API's connections (see
 * api_conns.h for why).
 *
 * A fixed array of slots (cap, MHD's hard limit) with a free list; MHD's
 * socket_context of a connection points at its slot.  Eviction scans the
 * slots for the oldest one waiting for a request: O(cap), only when a
 * connection is accepted beyond max.  The reaper wakes four times a second
 * and scans the same way.  Counters of what was closed are logged by the
 * reaper, at most once every LOG_EVERY_MS.
 */
#include "api_conns.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "util.h"

#define REAP_EVERY_MS 250
#define LOG_EVERY_MS 10000

typedef struct {
    int fd;      /* -1: free */
    int waiting; /* waiting for (the rest of) a request */
    int closing; /* shut down by us, MHD has not closed it yet */
    uint64_t deadline_ms;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    uint32_t next_free;
} slot_t;

struct api_conns {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t reaper;
    int running, stopping;
    slot_t *v;
    uint32_t cap, max, used, closing, free_head;
    uint64_t timeout_ms;
    uint64_t expired, evicted; /* under lock */
};

#define NO_SLOT UINT32_MAX

api_conns_t *api_conns_new(uint32_t max, uint32_t cap, uint32_t timeout_s)
{
    api_conns_t *t = an_calloc(1, sizeof(*t));
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &ca);
    pthread_condattr_destroy(&ca);
    t->cap = cap > max ? cap : max;
    t->max = max;
    t->timeout_ms = (uint64_t)timeout_s * 1000u;
    t->v = an_calloc(t->cap, sizeof(*t->v));
    for (uint32_t i = 0; i < t->cap; i++) {
        t->v[i].fd = -1;
        t->v[i].next_free = i + 1 < t->cap ? i + 1 : NO_SLOT;
    }
    t->free_head = 0;
    return t;
}

/* Shut a connection down (t->lock held): MHD reads the end of the stream
 * and closes it.  The peer is checked first: the slot's descriptor is
 * open (see api_conns.h), and this makes a mistake impossible anyway. */
static void shut(api_conns_t *t, slot_t *s)
{
    struct sockaddr_storage now;
    socklen_t len = sizeof(now);
    s->closing = 1;
    s->waiting = 0;
    t->closing++;
    if (getpeername(s->fd, (struct sockaddr *)&now, &len) == 0 && len == s->peer_len &&
        memcmp(&now, &s->peer, len) == 0)
        shutdown(s->fd, SHUT_RDWR);
}

/* The slot waiting for a request the longest (the earliest deadline). */
static slot_t *oldest_waiting(api_conns_t *t, const slot_t *except)
{
    slot_t *best = NULL;
    for (uint32_t i = 0; i < t->cap; i++) {
        slot_t *s = &t->v[i];
        if (s->fd < 0 || !s->waiting || s->closing || s == except)
            continue;
        if (best == NULL || s->deadline_ms < best->deadline_ms)
            best = s;
    }
    return best;
}

static void on_started(api_conns_t *t, struct MHD_Connection *c, void **ctx)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL)
        return;
    int fd = ci->connect_fd;
    pthread_mutex_lock(&t->lock);
    if (t->free_head == NO_SLOT) { /* cannot happen with cap >= MHD's limit */
        pthread_mutex_unlock(&t->lock);
        shutdown(fd, SHUT_RDWR);
        return;
    }
    slot_t *s = &t->v[t->free_head];
    t->free_head = s->next_free;
    t->used++;
    s->fd = fd;
    s->waiting = 1;
    s->closing = 0;
    s->deadline_ms = an_now_ms() + t->timeout_ms;
    s->peer_len = sizeof(s->peer);
    if (getpeername(fd, (struct sockaddr *)&s->peer, &s->peer_len) < 0)
        s->peer_len = 0;
    *ctx = s;
    if (t->used - t->closing > t->max) {
        slot_t *old = oldest_waiting(t, s);
        if (old) {
            shut(t, old);
            t->evicted++;
        }
    }
    pthread_mutex_unlock(&t->lock);
}

static void on_closed(api_conns_t *t, void **ctx)
{
    slot_t *s = *ctx;
    if (s == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    if (s->closing)
        t->closing--;
    s->fd = -1;
    s->waiting = s->closing = 0;
    s->next_free = t->free_head;
    t->free_head = (uint32_t)(s - t->v);
    t->used--;
    pthread_mutex_unlock(&t->lock);
    *ctx = NULL;
}

void api_conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        on_started(cls, c, socket_context);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED)
        on_closed(cls, socket_context);
}

static slot_t *slot_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

void api_conns_answering(api_conns_t *t, struct MHD_Connection *c, uint32_t answer_ms)
{
    slot_t *s = slot_of(c);
    if (t == NULL || s == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    s->waiting = 0;
    /* time to compute the answer, then as long again to send it */
    s->deadline_ms = an_now_ms() + answer_ms + t->timeout_ms;
    pthread_mutex_unlock(&t->lock);
}

void api_conns_waiting(api_conns_t *t, struct MHD_Connection *c)
{
    slot_t *s = slot_of(c);
    if (t == NULL || s == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    s->waiting = !s->closing;
    s->deadline_ms = an_now_ms() + t->timeout_ms;
    pthread_mutex_unlock(&t->lock);
}

static void *reaper_main(void *arg)
{
    api_conns_t *t = arg;
    uint64_t logged_at = 0, logged_expired = 0, logged_evicted = 0;
    pthread_mutex_lock(&t->lock);
    while (!t->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += REAP_EVERY_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->wake, &t->lock, &ts);
        if (t->stopping)
            break;
        uint64_t now = an_now_ms();
        for (uint32_t i = 0; i < t->cap; i++) {
            slot_t *s = &t->v[i];
            if (s->fd >= 0 && !s->closing && s->deadline_ms <= now) {
                shut(t, s);
                t->expired++;
            }
        }
        if ((t->expired != logged_expired || t->evicted != logged_evicted) &&
            now - logged_at >= LOG_EVERY_MS) {
            uint64_t ex = t->expired - logged_expired, ev = t->evicted - logged_evicted;
            logged_expired = t->expired;
            logged_evicted = t->evicted;
            logged_at = now;
            pthread_mutex_unlock(&t->lock);
            log_warn("api: closed %llu connections with no whole request within "
                     "request_timeout_s (%llu s) and %llu waiting ones to make room "
                     "(max_connections %u)",
                     (unsigned long long)ex, (unsigned long long)(t->timeout_ms / 1000u),
                     (unsigned long long)ev, t->max);
            pthread_mutex_lock(&t->lock);
        }
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

int api_conns_start(api_conns_t *t)
{
    int e = pthread_create(&t->reaper, NULL, reaper_main, t);
    if (e != 0) {
        errno = e;
        return -1;
    }
    t->running = 1;
    return 0;
}

void api_conns_stop(api_conns_t *t)
{
    if (t == NULL || !t->running)
        return;
    pthread_mutex_lock(&t->lock);
    t->stopping = 1;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->reaper, NULL);
    t->running = 0;
}

void api_conns_free(api_conns_t *t)
{
    if (t == NULL)
        return;
    api_conns_stop(t);
    pthread_cond_destroy(&t->wake);
    pthread_mutex_destroy(&t->lock);
    free(t->v);
    free(t);
}
