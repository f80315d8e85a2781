/* net_linger.c -- lingering close (see net_linger.h for the design).
 *
 * A linger_t is on its list's `open` list while its socket is open (a
 * watcher in the worker's loop, EV_READ | EV_RDHUP), then on `dead` until
 * the end of the loop turn.  Reads go into the worker's
 * scratch buffer and are thrown away.
 */
#include "net_linger.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

struct linger_s {
    ev_watcher_t ev; /* the socket; ev.fd -1 once closed */
    uint32_t bytes;  /* read and discarded so far */
    linger_list_t *ll;
    tw_timer_t timer; /* LINGER_MS after the start */
    linger_t *next, *prev;
};

static void finish(linger_t *l)
{
    linger_list_t *ll = l->ll;
    if (l->ev.fd < 0)
        return;
    tw_del(ll->tw, &l->timer);
    ev_watch_stop(ll->loop, &l->ev);
    close(l->ev.fd);
    l->ev.fd = -1;
    if (l->prev)
        l->prev->next = l->next;
    else
        ll->open = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->prev = NULL;
    l->next = ll->dead;
    ll->dead = l;
}

/* Read and discard what is there: 1 while the socket may linger on, 0
 * when the peer closed, failed, or sent more than LINGER_MAX_BYTES. */
static int drain(linger_list_t *ll, int fd, uint32_t *bytes)
{
    for (int i = 0; i < 4; i++) { /* a bounded share of the turn */
        ssize_t n = recv(fd, ll->scratch, ll->scratch_size, 0);
        if (n > 0) {
            *bytes += (uint32_t)n;
            if (*bytes >= LINGER_MAX_BYTES)
                return 0;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return 1;
}

static void on_timer(tw_timer_t *t)
{
    finish(container_of(t, linger_t, timer));
}

/* Readable, or the peer closed: drain; finish when done. */
static void on_event(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    (void)loop;
    (void)events;
    linger_t *l = container_of(ev, linger_t, ev);
    if (!drain(l->ll, l->ev.fd, &l->bytes))
        finish(l);
}

void linger_init(linger_list_t *ll, ev_loop_t *loop, tw_t *tw, uint8_t *scratch,
                 size_t scratch_size)
{
    *ll = (linger_list_t){.loop = loop, .tw = tw, .scratch = scratch, .scratch_size = scratch_size};
}

void linger_start(linger_list_t *ll, uint64_t now, int fd)
{
    uint32_t bytes = 0;
    linger_t *l = NULL;
    /* FIN after what was written; the peer has it all once it reads EOF */
    if (shutdown(fd, SHUT_WR) < 0 || !drain(ll, fd, &bytes))
        goto close_now;
    l = an_calloc(1, sizeof(*l));
    ev_watcher_init(&l->ev, fd, on_event);
    l->bytes = bytes;
    l->ll = ll;
    if (ev_watch_start(ll->loop, &l->ev, EV_READ | EV_RDHUP) < 0)
        goto close_now;
    tw_timer_init(&l->timer, on_timer);
    tw_add(ll->tw, &l->timer, now + LINGER_MS);
    l->next = ll->open;
    if (ll->open)
        ll->open->prev = l;
    ll->open = l;
    return;
close_now:
    free(l);
    close(fd);
}

void linger_close_all(linger_list_t *ll)
{
    while (ll->open) {
        linger_t *l = ll->open;
        uint32_t bytes = 0;
        (void)drain(ll, l->ev.fd, &bytes); /* no RST for what is already here */
        finish(l);
    }
}

void linger_reap(linger_list_t *ll)
{
    while (ll->dead) {
        linger_t *l = ll->dead;
        ll->dead = l->next;
        free(l);
    }
}
