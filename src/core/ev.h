/* ev.h -- the event loop: one poller per thread, a callback per descriptor.
 *
 * An ev_loop_t owns the poller (epoll); an ev_watcher_t is one descriptor
 * in it: the fd, the events of interest and the callback that handles
 * them.  The watcher is embedded in its owner's struct (a connection, a
 * lingering socket, a worker's inbox or listener) and the callback gets
 * back to the owner with container_of, as a tw_timer_t does.  Nothing is
 * allocated per watcher and the loop keeps no list of them: the poller's
 * event data is the watcher's address.  ev_watch_start, ev_watch_modify
 * and ev_watch_stop are the only code that changes the poller's set, so
 * another poller (io_uring, kqueue) is a change of ev.c alone.
 *
 * A turn: ev_loop_run_once(timeout) waits for one batch of ready
 * descriptors (at most the batch size given to ev_loop_init), calls the
 * loop's after_poll hook (the owner refreshes its clock there), then the
 * callback of each ready watcher, in the poller's order, and returns.
 * Timers are not the loop's business: the owner computes the timeout from
 * its timer wheel (tw.h) and advances the wheel after the call.
 *
 * Stale events: a callback may stop any watcher, itself included, and its
 * owner may free the watcher's memory at once.  ev_watch_stop removes the
 * watcher's events still waiting in the current batch (libuv does the
 * same), so a watcher stopped earlier in a batch is never called for it,
 * even if it was started again meanwhile.  A callback only receives the
 * events still of interest when it is dispatched (EV_ERROR and EV_HUP are
 * always of interest, as with epoll); none left, no call.
 *
 * Level-triggered.  A watcher belongs to no loop between a stop and the
 * next start, so it can move to another thread's loop (a connection handed
 * to its home worker); it is in at most one loop at a time.
 *
 * What a new descriptor owner (a UDP socket, a peer link, a sink's socket,
 * a timerfd) implements: a struct embedding an ev_watcher_t, initialised
 * with ev_watcher_init(fd, callback); a callback that finds its struct with
 * container_of and handles EV_READ / EV_WRITE / EV_ERROR / EV_HUP, reading
 * or writing a bounded amount per call (other watchers share the turn);
 * ev_watch_start on the worker's loop (worker_t.loop) with EV_READ, and
 * ev_watch_modify to add or drop EV_WRITE while output waits; on close,
 * ev_watch_stop before close(fd).  It never touches the poller itself.
 * A timerfd or an eventfd is read in its callback (level-triggered: unread,
 * it fires again next turn).  Work that another thread hands to a worker
 * needs no descriptor of its own: register an inbox kind (server.h).
 *
 * Thread: a loop and its watchers are touched by the thread running the
 * loop only.
 */
#ifndef ANTENNA_EV_H
#define ANTENNA_EV_H

#include <stdint.h>

/* Event bits: the same values as epoll's (ev.c checks), so no translation
 * on the hot path. */
#define EV_READ 0x001u   /* EPOLLIN */
#define EV_WRITE 0x004u  /* EPOLLOUT */
#define EV_ERROR 0x008u  /* EPOLLERR: reported, never asked for */
#define EV_HUP 0x010u    /* EPOLLHUP: reported, never asked for */
#define EV_RDHUP 0x2000u /* EPOLLRDHUP: the peer shut down its side */
/* Interest only: one waiter of all the loops watching a shared fd is woken
 * (EPOLLEXCLUSIVE, accept on a listener shared by the workers).  Such a
 * watcher cannot be modified: stop and start it. */
#define EV_EXCLUSIVE (1u << 28)
/* Internal: the watcher is in a loop (a bit epoll does not use). */
#define EV__ACTIVE (1u << 24)

typedef struct ev_loop_s ev_loop_t;
typedef struct ev_watcher_s ev_watcher_t;

/* Called with the events that are ready (EV_*, some of those asked for,
 * and EV_ERROR / EV_HUP). */
typedef void (*ev_cb_t)(ev_loop_t *loop, ev_watcher_t *w, uint32_t events);

struct ev_watcher_s {
    ev_cb_t cb;
    int fd;
    uint32_t events; /* interest (EV_*), and EV__ACTIVE while in a loop */
};

struct epoll_event;

struct ev_loop_s {
    int epfd;         /* -1 before ev_loop_init */
    int batch;        /* size of events[] */
    int nready, next; /* the batch being dispatched: events[next..nready) wait */
    struct epoll_event *events;
    void (*after_poll)(ev_loop_t *loop);
    int no_pwait2; /* epoll_pwait2 said ENOSYS: waits in microseconds round up to ms */
};

/* Create the poller; after_poll (may be NULL) is called once per turn when
 * the wait returns, before any callback.  Returns 0, or -1 (errno).  On
 * failure loop->epfd is -1 and ev_loop_free is safe. */
int ev_loop_init(ev_loop_t *loop, int batch, void (*after_poll)(ev_loop_t *loop));
/* Close the poller.  The watchers still in it are simply forgotten. */
void ev_loop_free(ev_loop_t *loop);

/* Wait up to timeout_ms (-1: no limit, 0: poll) for one batch, dispatch it,
 * return the number of ready descriptors (0 on timeout or a signal), or -1
 * on a poller error (errno; the loop is unusable). */
int ev_loop_run_once(ev_loop_t *loop, int timeout_ms);

/* The same with a timeout in microseconds (-1: no limit): epoll_pwait2,
 * or on a kernel without it (before 5.11) epoll_wait rounded up to a
 * millisecond. */
int ev_loop_run_once_us(ev_loop_t *loop, int64_t timeout_us);

/* Set a watcher's descriptor and callback (not started). */
void ev_watcher_init(ev_watcher_t *w, int fd, ev_cb_t cb);
static inline int ev_watch_active(const ev_watcher_t *w)
{
    return (w->events & EV__ACTIVE) != 0;
}
/* Put w in the loop with interest `events` (EV_READ, EV_WRITE, EV_RDHUP,
 * EV_EXCLUSIVE).  Returns 0, or -1 (errno; w stays stopped). */
int ev_watch_start(ev_loop_t *loop, ev_watcher_t *w, uint32_t events);
/* Change a started watcher's interest (a no-op when unchanged).  Returns 0,
 * or -1 (errno): ENOENT when w is stopped, EINVAL for an EV_EXCLUSIVE one. */
int ev_watch_modify(ev_loop_t *loop, ev_watcher_t *w, uint32_t events);
/* Take w out of the loop; its events still waiting in this batch are
 * dropped.  Idempotent.  The descriptor may be closed and the memory freed
 * after it returns. */
void ev_watch_stop(ev_loop_t *loop, ev_watcher_t *w);

#endif
