/* ev.c -- the event loop over epoll (see ev.h for the design).
 *
 * The epoll data of a descriptor is its watcher's address.  While a batch
 * is dispatched, events[next..nready) are the ones still waiting;
 * ev_watch_stop clears the data of those that belong to the watcher it
 * stops, and the dispatcher skips a cleared entry.  The scan costs at most
 * one batch of comparisons per stop, and only for a stop made during a
 * dispatch; the hot path (a ready watcher called) reads the event, the
 * watcher's interest and its callback.
 */
#include "ev.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

_Static_assert(EV_READ == EPOLLIN && EV_WRITE == EPOLLOUT && EV_ERROR == EPOLLERR &&
                   EV_HUP == EPOLLHUP && EV_RDHUP == EPOLLRDHUP && EV_EXCLUSIVE == EPOLLEXCLUSIVE,
               "EV_* must equal the epoll bits");
_Static_assert((EV__ACTIVE & (EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDNORM |
                              EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLMSG | EPOLLRDHUP |
                              EPOLLEXCLUSIVE | EPOLLWAKEUP | EPOLLONESHOT | EPOLLET)) == 0,
               "EV__ACTIVE overlaps an epoll bit");

int ev_loop_init(ev_loop_t *loop, int batch, void (*after_poll)(ev_loop_t *loop))
{
    loop->batch = batch > 0 ? batch : 1;
    loop->nready = loop->next = 0;
    loop->after_poll = after_poll;
    loop->no_pwait2 = 0;
    loop->events = NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        return -1;
    loop->events = an_calloc((size_t)loop->batch, sizeof(*loop->events));
    return 0;
}

void ev_loop_free(ev_loop_t *loop)
{
    if (loop->epfd >= 0)
        close(loop->epfd);
    loop->epfd = -1;
    free(loop->events);
    loop->events = NULL;
}

/* The wait returned n (or -1): the turn's callbacks. */
static int dispatch(ev_loop_t *loop, int n)
{
    if (n < 0) {
        if (errno != EINTR)
            return -1;
        n = 0;
    }
    if (loop->after_poll)
        loop->after_poll(loop);
    loop->nready = n;
    loop->next = 0;
    while (loop->next < loop->nready) {
        struct epoll_event *e = &loop->events[loop->next++];
        ev_watcher_t *w = e->data.ptr;
        if (w == NULL)
            continue; /* stopped earlier in this batch */
        uint32_t ready = e->events & (w->events | EV_ERROR | EV_HUP);
        if (ready)
            w->cb(loop, w, ready);
    }
    loop->nready = loop->next = 0;
    return n;
}

int ev_loop_run_once(ev_loop_t *loop, int timeout_ms)
{
    return dispatch(loop, epoll_wait(loop->epfd, loop->events, loop->batch, timeout_ms));
}

int ev_loop_run_once_us(ev_loop_t *loop, int64_t timeout_us)
{
    if (timeout_us < 0 || timeout_us % 1000 == 0 || loop->no_pwait2) {
        int64_t ms = timeout_us < 0 ? -1 : (timeout_us + 999) / 1000;
        return ev_loop_run_once(loop, ms > INT_MAX ? INT_MAX : (int)ms);
    }
    struct timespec ts = {.tv_sec = timeout_us / 1000000, .tv_nsec = (timeout_us % 1000000) * 1000};
    int n = epoll_pwait2(loop->epfd, loop->events, loop->batch, &ts, NULL);
    if (n < 0 && errno == ENOSYS) {
        loop->no_pwait2 = 1;
        return ev_loop_run_once_us(loop, timeout_us);
    }
    return dispatch(loop, n);
}

void ev_watcher_init(ev_watcher_t *w, int fd, ev_cb_t cb)
{
    w->cb = cb;
    w->fd = fd;
    w->events = 0;
}

int ev_watch_start(ev_loop_t *loop, ev_watcher_t *w, uint32_t events)
{
    events &= ~EV__ACTIVE;
    struct epoll_event e = {.events = events, .data.ptr = w};
    if (ev_watch_active(w)) {
        errno = EEXIST;
        return -1;
    }
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, w->fd, &e) < 0)
        return -1;
    w->events = events | EV__ACTIVE;
    return 0;
}

int ev_watch_modify(ev_loop_t *loop, ev_watcher_t *w, uint32_t events)
{
    events &= ~EV__ACTIVE;
    if (!ev_watch_active(w)) {
        errno = ENOENT;
        return -1;
    }
    if ((w->events & ~EV__ACTIVE) == events)
        return 0;
    if ((w->events | events) & EV_EXCLUSIVE) {
        errno = EINVAL; /* the kernel refuses EPOLL_CTL_MOD on those */
        return -1;
    }
    struct epoll_event e = {.events = events, .data.ptr = w};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &e) < 0)
        return -1;
    w->events = events | EV__ACTIVE;
    return 0;
}

void ev_watch_stop(ev_loop_t *loop, ev_watcher_t *w)
{
    if (!ev_watch_active(w))
        return;
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->events = 0;
    for (int i = loop->next; i < loop->nready; i++)
        if (loop->events[i].data.ptr == w)
            loop->events[i].data.ptr = NULL;
}
