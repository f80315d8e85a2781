/* worker.c -- one worker thread: its loop, accept, inbox, end of turn.
 *
 * A loop turn, in fixed order:
 *   1. ev_loop_run_once (ev.h), with the timeout of the next timer (no
 *      periodic tick): the wait, then the callback of every ready watcher:
 *      accept on the shared listeners (EV_EXCLUSIVE: one worker wakes per
 *      connection, here), connections and lingering sockets (conn.c,
 *      net_linger.c), the inbox (here);
 *   2. timers due (keepalive, connect timeout, retries, expiry, the
 *      modules' ticks: module.h);
 *   3. end of turn: one write per connection with output, one inbox post
 *      per other worker with deliveries, then free what was closed.
 * Connections closed during a turn are freed only in step 3: the flush
 * list may still hold them (the loop itself drops the events of a watcher
 * stopped earlier in the batch).
 *
 * The inbox: each item is run by the handler its kind's module registered
 * (worker_inbox_register), an index into the server's table.  Its doorbell
 * (inbox.h) is rung only while this worker sleeps: before each wait
 * inbox_sleep says whether items came without one (then the wait does not
 * block), and after the wait they are run even without the eventfd.  A
 * doorbell for another worker that woke less than coalesce_us ago is
 * deferred (a busy worker takes our items in its next turn anyway): its
 * time is in ring_at[], our wait is cut to the earliest (ev_loop_run_once_us),
 * and every end of turn rings_check drops those no longer needed (the
 * items taken, or the other worker running) and rings those due.
 *
 * Coalescing (conf workers_coalesce_us, the same window): a busy worker,
 * one whose last wait lasted less than the window, sleeps out the rest of
 * the window counted from its last wake-up before it polls again, so that
 * a stream of small events (a thousand publishers' sockets, another
 * worker's doorbells) is taken in one turn instead of a wake-up each.  An
 * idle worker never holds back (its last wait was long); a busy one wakes
 * at most once per window.  Fewer context switches for the same work, each
 * event delayed at most one window: what matters when the broker shares
 * two cores with its clients (docs/benchmarks.md, issue 15).
 *
 * Out of file descriptors (accept4: EMFILE/ENFILE), a level-triggered
 * listener stays readable and the loop would spin on it.  Each worker
 * keeps a reserve descriptor (/dev/null): it is closed, the waiting
 * connection accepted and closed at once (counted as refused, reason
 * fd_limit), and the reserve reopened; the backlog drains and the workers
 * go back to sleep.  When that fails (another thread took the freed slot),
 * the worker stops watching the listeners for ACCEPT_PAUSE_MS.  The log
 * line is rate-limited (log_limited) like every line a client can cause
 * in a loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <string.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "migrate.h"
#include "module.h"
#include "net_linger.h"
#include "persist.h"
#include "sess.h"
#include "server.h"

#define EV_BATCH 256
#define ACCEPT_BATCH 64
/* Back-pressure between workers: past this many items waiting in another
 * worker's inbox, this worker stops reading its clients for a moment. */
#define INBOX_HIGH 65536
#define CONGESTION_PAUSE_MS 5
/* Listeners unwatched after an EMFILE the reserve descriptor could not
 * absorb; log lines a client can cause: at most one per LOG_LIMIT_MS. */
#define ACCEPT_PAUSE_MS 100
#define LOG_LIMIT_MS 1000

/* Keyed: no client can pick ids that all land on one worker. */
uint32_t worker_home(const server_t *srv, const uint8_t *client_id, size_t len)
{
    uint64_t h = an_siphash(srv->home_key, client_id, len);
    if (unlikely(atomic_load_explicit(&((server_t *)srv)->nhomes, memory_order_acquire) != 0))
        return migrate_home(srv, h, client_id, len); /* moved sessions (migrate.h) */
    return (uint32_t)(h % srv->nworkers);
}

sess_t *worker_find_sid(worker_t *w, uint64_t sid)
{
    return sess_table_find_sid(&w->by_sid, sid);
}

void worker_post(worker_t *w, uint32_t to, const inbox_item_t *it)
{
    inbox_vec_push(&w->outbox[to], it);
}

/* Output buffers (server.h): this turn's in the arena, the rest malloc'd. */
static size_t buf_private_size(size_t need)
{
    size_t c = BUF_SMALL;
    while (c < need)
        c *= 2;
    return c;
}

void *worker_buf_get(worker_t *w, size_t size, size_t *cap)
{
    void *p;
    if (size <= BUF_ARENA_MAX && (p = oarena_alloc(&w->obufs, size, cap)) != NULL)
        return p;
    *cap = buf_private_size(size);
    return an_malloc(*cap);
}

void worker_buf_room(worker_t *w, uint8_t **buf, uint32_t *len, uint32_t *off, uint32_t *cap,
                     size_t n)
{
    if ((size_t)*len + n <= *cap)
        return;
    if (!oarena_owns(&w->obufs, *buf)) {
        buf_make_room(buf, len, off, cap, n);
        return;
    }
    size_t c = *cap, pending = *len - *off, need = pending + n;
    if (oarena_grow(&w->obufs, *buf, (size_t)*len + n, &c)) {
        *cap = (uint32_t)c; /* the newest chunk: in place */
        return;
    }
    /* a new chunk of twice the size (amortised copies), or its own buffer */
    size_t want = AN_MAX((size_t)*cap * 2, need);
    uint8_t *nb = want <= BUF_ARENA_MAX ? oarena_alloc(&w->obufs, want, &c) : NULL;
    if (nb == NULL) {
        c = buf_private_size(need);
        nb = an_malloc(c);
    }
    memcpy(nb, *buf + *off, pending);
    *buf = nb;
    *len = (uint32_t)pending;
    *off = 0;
    *cap = (uint32_t)c;
}

void worker_buf_put(worker_t *w, void *buf, size_t cap)
{
    (void)cap;
    if (!oarena_owns(&w->obufs, buf))
        free(buf);
}

void worker_buf_keep(worker_t *w, uint8_t **buf, uint32_t *len, uint32_t *off, uint32_t *cap)
{
    if (*buf == NULL || !oarena_owns(&w->obufs, *buf))
        return;
    uint32_t pending = *len - *off;
    if (pending == 0) {
        *buf = NULL;
        *len = *off = *cap = 0;
        return;
    }
    size_t c = buf_private_size(pending);
    uint8_t *nb = an_malloc(c);
    memcpy(nb, *buf + *off, pending);
    *buf = nb;
    *len = pending;
    *off = 0;
    *cap = (uint32_t)c;
}

/* The arena's resident pages above BUF_ARENA_KEEP, once a second while a
 * burst's are there: given back when the last second used less than half
 * of them (oarena_trim). */
#define BUF_ARENA_SIZE ((size_t)64 << 20) /* address space per worker */
#define BUF_ARENA_KEEP ((size_t)256 << 10)
#define BUF_TRIM_MS 1000
#define SCRATCH_KEEP 4096 /* router scratch entries kept after a burst */
#define TRIM_ACKS 1024    /* acknowledged deliveries that call for a malloc_trim */

/* The QoS 1/2 exchanges this worker's clients completed (their PUBACKs and
 * PUBCOMPs read): each freed a delivery's state. */
static uint64_t acks_in(worker_t *w)
{
    return STAT_GET(w->stats.pkts_in[MQTT_PUBACK]) + STAT_GET(w->stats.pkts_in[MQTT_PUBCOMP]);
}

static void on_obufs_timer(tw_timer_t *t)
{
    worker_t *w = container_of(t, worker_t, obufs_timer);
    if (oarena_trim(&w->obufs, BUF_ARENA_KEEP) > 0) {
        /* the burst is over: the router's scratch of a big fanout (24 B a
         * subscriber matched), and what malloc holds free (the sessions'
         * inflight rings of a QoS 1 broadcast, all freed by now) */
        if (w->matches_cap > SCRATCH_KEEP) {
            free(w->matches);
            w->matches = NULL;
            w->matches_cap = 0;
        }
        if (w->targets_cap > SCRATCH_KEEP) {
            free(w->targets);
            w->targets = NULL;
            w->targets_cap = 0;
        }
        malloc_trim(0);
        w->trim_acks = acks_in(w);
    }
    if (oarena_resident(&w->obufs) > BUF_ARENA_KEEP)
        tw_add(&w->tw, &w->obufs_timer, w->now + BUF_TRIM_MS);
}

/* The end of the turn, after every connection with output was flushed
 * (and kept what its socket did not take): every arena chunk is dead. */
static void obufs_turn_end(worker_t *w)
{
    oarena_reset(&w->obufs);
    if (oarena_resident(&w->obufs) > BUF_ARENA_KEEP && !tw_pending(&w->obufs_timer))
        tw_add(&w->tw, &w->obufs_timer, w->now + BUF_TRIM_MS);
}

/* Overload protection at the door: returns NULL and counts the connection,
 * or the reason it is refused. */
static const char *admit(worker_t *w, uint32_t li)
{
    server_t *srv = w->srv;
    const conf_t *cf = server_live(srv);
    uint32_t door = atomic_load_explicit(&srv->door_closed, memory_order_relaxed);
    if (door) {
        STAT_ADD(w->stats.refused_door, 1);
        return (door & SRV_DOOR_DRAIN) ? "the node is draining" : "the cluster lease is lost";
    }
    if (atomic_load_explicit(&srv->over_high_water, memory_order_relaxed)) {
        STAT_ADD(w->stats.refused_memory, 1);
        return "memory_high_water reached";
    }
    if (cf->max_connection_rate) {
        uint64_t sec = w->now / 1000u, cur = atomic_load(&srv->rate_second);
        if (cur != sec && atomic_compare_exchange_strong(&srv->rate_second, &cur, sec))
            atomic_store(&srv->rate_count, 0);
        if (atomic_fetch_add(&srv->rate_count, 1) >= cf->max_connection_rate) {
            STAT_ADD(w->stats.refused_rate, 1);
            return "max_connection_rate reached";
        }
    }
    uint32_t lmax = cf->listeners[li].max_connections;
    if (atomic_fetch_add(&srv->listen_conns[li], 1) >= lmax && lmax) {
        atomic_fetch_sub(&srv->listen_conns[li], 1);
        STAT_ADD(w->stats.refused_limit, 1);
        return "the listener's max_connections reached";
    }
    if (atomic_fetch_add(&srv->total_conns, 1) >= cf->max_connections && cf->max_connections) {
        atomic_fetch_sub(&srv->total_conns, 1);
        atomic_fetch_sub(&srv->listen_conns[li], 1);
        STAT_ADD(w->stats.refused_limit, 1);
        return "max_connections reached";
    }
    return NULL;
}

static void reserve_open(worker_t *w)
{
    if (w->reserve_fd < 0)
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Watch (on) or stop watching (off) every listener in this worker's loop.
 * EV_EXCLUSIVE watchers cannot be modified: stopped and started. */
static void listeners_watch(worker_t *w, int on)
{
    for (uint32_t i = 0; i < CONF_MAX_LISTENERS; i++) {
        if (w->listen_ev[i].cb == NULL) /* never opened, or removed (reload.h) */
            continue;
        if (on)
            (void)ev_watch_start(&w->loop, &w->listen_ev[i], EV_READ | EV_EXCLUSIVE);
        else
            ev_watch_stop(&w->loop, &w->listen_ev[i]);
    }
}

static void on_accept_timer(tw_timer_t *t)
{
    worker_t *w = container_of(t, worker_t, accept_timer);
    reserve_open(w);
    if (w->accept_paused) {
        w->accept_paused = 0;
        listeners_watch(w, 1);
    }
}

/* accept4 failed with EMFILE or ENFILE (errno `err`): refuse what waits on
 * listener li with the reserve descriptor, or pause accepting. */
static void accept_fd_limit(worker_t *w, uint32_t li, int err)
{
    server_t *srv = w->srv;
    uint32_t refused = 0;
    int pause = 1;
    if (w->lingers.open) {
        /* descriptors that are only waiting: free them, accept next turn */
        linger_close_all(&w->lingers);
        log_limited(LOG_LIMIT_MS, AN_LOG_WARN,
                    "listener %s: accept: %s: lingering closes cut short",
                    srv->conf.listeners[li].name, strerror(err));
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH && w->reserve_fd >= 0; i++) {
        close(w->reserve_fd);
        w->reserve_fd = -1;
        int fd = accept4(srv->listen_fds[li], NULL, NULL, SOCK_CLOEXEC);
        int e = errno;
        if (fd >= 0) {
            close(fd);
            refused++;
        }
        reserve_open(w);
        if (fd < 0) {
            pause = e != EAGAIN && e != EWOULDBLOCK; /* drained, or still none */
            break;
        }
    }
    STAT_ADD(w->stats.refused_fd_limit, refused);
    if (pause && !w->accept_paused) {
        w->accept_paused = 1;
        listeners_watch(w, 0);
        tw_add(&w->tw, &w->accept_timer, w->now + ACCEPT_PAUSE_MS);
    }
    log_limited(LOG_LIMIT_MS, AN_LOG_WARN,
                "listener %s: accept: %s: %u waiting connection(s) refused%s; raise the "
                "open-file limit (ulimit -n, systemd LimitNOFILE) or lower max_connections",
                srv->conf.listeners[li].name, strerror(err), refused,
                pause ? ", accepting paused for 100 ms" : "");
}

static void accept_many(worker_t *w, uint32_t li)
{
    server_t *srv = w->srv;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_in6 sa;
        socklen_t len = sizeof(sa);
        int fd = accept4(srv->listen_fds[li], (struct sockaddr *)&sa, &len,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                accept_fd_limit(w, li, errno);
            return; /* EAGAIN: another worker took it, or none left */
        }
        const char *refused = admit(w, li);
        if (refused) {
            close(fd); /* before any work: no struct, no read */
            char addr[INET6_ADDRSTRLEN] = "?", peer[INET6_ADDRSTRLEN + 8];
            if (sa.sin6_family == AF_INET) {
                const struct sockaddr_in *s4 = (const struct sockaddr_in *)&sa;
                inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
                snprintf(peer, sizeof(peer), "%s:%u", addr, ntohs(s4->sin_port));
            } else {
                inet_ntop(AF_INET6, &sa.sin6_addr, addr, sizeof(addr));
                snprintf(peer, sizeof(peer), "[%s]:%u", addr, ntohs(sa.sin6_port));
            }
            static log_limit_t limit;
            log_fields_t f = {.event = "connection_refused",
                              .peer = peer,
                              .listener = srv->conf.listeners[li].name,
                              .reason = refused};
            log_limited_ev(&limit, LOG_LIMIT_MS, AN_LOG_WARN, &f,
                           "listener %s: connection from %s refused: %s",
                           srv->conf.listeners[li].name, peer, refused);
            continue;
        }
        int one = 1;
        if (!srv->listen_nodelay[li]) /* else inherited from the listener */
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = conn_new(w, fd, (struct sockaddr *)&sa, (uint8_t)li);
        if (c == NULL) {
            atomic_fetch_sub(&srv->listen_conns[li], 1);
            atomic_fetch_sub(&srv->total_conns, 1);
            close(fd);
            log_limited(LOG_LIMIT_MS, AN_LOG_WARN,
                        "listener %s: connection refused: cannot allocate TLS state",
                        srv->conf.listeners[li].name);
            continue;
        }
        STAT_ADD(w->stats.accepted[li], 1);
        if (conn_watch(c) < 0) {
            conn_close(c, "cannot watch the socket", 0);
            continue;
        }
        /* the TLS handshake and the PROXY header get handshake_timeout,
         * then the WebSocket upgrade and the CONNECT connect_timeout
         * (re-armed by conn.c) */
        const conf_listener_t *l = &srv->conf.listeners[li];
        uint32_t secs = (l->transport == CONF_TRANSPORT_TLS || l->transport == CONF_TRANSPORT_WSS ||
                         l->proxy_protocol != CONF_PROXY_OFF)
                            ? l->handshake_timeout
                            : server_live(srv)->connect_timeout;
        tw_add(&w->tw, &c->timer, w->now + (uint64_t)secs * 1000u);
    }
}

int worker_congested(worker_t *w)
{
    if (w->now < w->congested_until)
        return 1;
    for (uint32_t i = 0; i < w->srv->nworkers; i++)
        if (i != w->id && inbox_waiting(&w->srv->workers[i].inbox) > INBOX_HIGH) {
            w->congested_until = w->now + CONGESTION_PAUSE_MS;
            STAT_ADD(w->stats.congested, 1);
            return 1;
        }
    return 0;
}

/* A listener is readable: take what waits on it (listen_ev[li]). */
static void on_listener(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    (void)events;
    worker_t *w = container_of(loop, worker_t, loop);
    accept_many(w, (uint32_t)(ev - w->listen_ev));
}

void worker_listener_watch(worker_t *w, uint32_t i, int on)
{
    if (on) {
        ev_watcher_init(&w->listen_ev[i], w->srv->listen_fds[i], on_listener);
        if (!w->accept_paused &&
            ev_watch_start(&w->loop, &w->listen_ev[i], EV_READ | EV_EXCLUSIVE) < 0)
            log_error("worker %u: cannot watch listener %u: %s", w->id, i, strerror(errno));
    } else if (w->listen_ev[i].cb) {
        ev_watch_stop(&w->loop, &w->listen_ev[i]);
        w->listen_ev[i].cb = NULL;
    }
}

void worker_inbox_register(server_t *srv, uint8_t kind, const worker_inbox_kind_t *k)
{
    if (kind == 0 || kind >= WM_KINDS || srv->inbox_kinds[kind].run || k->run == NULL) {
        log_error("inbox kind %u registered twice or out of range", kind);
        abort(); /* a programming error, at start-up */
    }
    srv->inbox_kinds[kind] = *k;
}

static void run_stop(worker_t *w, inbox_item_t *it)
{
    (void)it;
    w->stopping = 1;
}

void worker_register_inbox(server_t *srv)
{
    static const worker_inbox_kind_t stop = {.run = run_stop};
    worker_inbox_register(srv, WM_STOP, &stop);
}

/* Run every item waiting in the inbox, in order. */
static void run_inbox(worker_t *w)
{
    const worker_inbox_kind_t *kinds = w->srv->inbox_kinds;
    inbox_take(&w->inbox, &w->taken);
    for (size_t i = 0; i < w->taken.len; i++) {
        inbox_item_t *it = &w->taken.items[i];
        kinds[it->kind].run(w, it);
    }
    w->taken.len = 0;
    if (w->taken.cap > 4 * INBOX_HIGH) /* a burst is over: give it back */
        inbox_vec_free(&w->taken);
}

/* The inbox's eventfd is readable (it was rung while we slept). */
static void on_inbox(ev_loop_t *loop, ev_watcher_t *ev, uint32_t events)
{
    (void)events;
    (void)ev;
    run_inbox(container_of(loop, worker_t, loop));
}

/* Deferred doorbells (inbox_post_defer): drop those no longer needed,
 * ring those whose time has come, note when the next one is due. */
static void rings_check(worker_t *w, uint64_t now_us, int all)
{
    uint64_t next = UINT64_MAX;
    for (uint32_t i = 0; i < w->srv->nworkers && w->rings_owed; i++) {
        if (w->ring_at[i] == 0)
            continue;
        if (!inbox_ring_due(&w->srv->workers[i].inbox, all || now_us >= w->ring_at[i])) {
            w->ring_at[i] = 0;
            w->rings_owed--;
        } else if (w->ring_at[i] < next) {
            next = w->ring_at[i];
        }
    }
    w->ring_next = next;
}

static void end_of_turn(worker_t *w)
{
    /* this turn's store writes, one batch, submitted before anything is
     * posted to another worker: their writes about what we send them then
     * commit after ours (persist.h) */
    persist_flush(w);
    /* modules that asked to hand this turn's work on (module.h) */
    if (w->turn_end_head)
        module_turn_end_run(w);
    /* one inbox post per destination worker, before our own writes: a
     * client that reads our PUBACK finds the message already on its way to
     * every other worker's sessions (a reconnect cannot overtake it) */
    uint64_t now_us = an_now_us();
    for (uint32_t i = 0; i < w->srv->nworkers; i++) {
        if (w->outbox[i].len == 0)
            continue;
        int owed = 0;
        if (inbox_post_defer(&w->srv->workers[i].inbox, &w->outbox[i], now_us, w->coalesce_us,
                             &owed) > INBOX_HIGH) {
            /* the other worker is behind: pause our readers briefly */
            w->congested_until = w->now + CONGESTION_PAUSE_MS;
            STAT_ADD(w->stats.congested, 1);
        }
        if (owed && w->ring_at[i] == 0) {
            w->ring_at[i] = now_us + w->coalesce_us;
            w->rings_owed++;
        }
    }
    if (w->rings_owed)
        rings_check(w, now_us, 0);
    /* one write per connection that has output */
    while (w->flush_head) {
        conn_t *c = w->flush_head;
        w->flush_head = c->turn_next;
        c->turn_next = NULL;
        if (c->state == CONN_DEAD)
            conn_free(c); /* closed after it had output queued */
        else
            conn_flush(c);
    }
    /* connections wanted on another worker (migrate.h): after every post
     * and write of the turn, so what they sent is on its way first */
    if (unlikely(w->nmigs != 0))
        migrate_run(w);
    while (w->dead_head) {
        conn_t *c = w->dead_head;
        w->dead_head = c->turn_next;
        conn_free(c);
    }
    obufs_turn_end(w);
    linger_reap(&w->lingers);
}

static void shutdown_worker(worker_t *w)
{
    while (w->conns)
        conn_close_reason(w->conns, "server shutting down", 0, MQTT_RC_SERVER_SHUTTING_DOWN);
    end_of_turn(w);
    if (w->rings_owed)
        rings_check(w, 0, 1);      /* nobody comes back to ring them */
    linger_close_all(&w->lingers); /* no waiting on the way out */
    linger_reap(&w->lingers);
}

/* The wait returned: the turn's clock, before any callback. */
static void after_poll(ev_loop_t *loop)
{
    worker_t *w = container_of(loop, worker_t, loop);
    w->turn_start = an_now_us();
    w->now = w->turn_start / 1000u;
    struct timespec ts; /* the vDSO's coarse clock: a few ns, once per turn */
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    w->wall_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    inbox_wake(&w->inbox, w->turn_start);
    w->last_sleep_us = w->turn_start - w->wait_start;
}

/* One turn: wait at most max_ms (-1: no cap) or until the next timer, run
 * what is ready, the timers due and the end of the turn.  0, or -1 when
 * the loop failed (logged). */
static int turn(worker_t *w, int max_ms)
{
    int64_t t = tw_next_timeout(&w->tw);
    int64_t timeout = t < 0 ? -1 : (t > INT_MAX ? INT_MAX : t) * 1000; /* us */
    if (max_ms >= 0 && (timeout < 0 || timeout > (int64_t)max_ms * 1000))
        timeout = (int64_t)max_ms * 1000;
    if (w->rings_owed) { /* wake up to ring a deferred doorbell */
        uint64_t now_us = an_now_us();
        int64_t d = w->ring_next > now_us ? (int64_t)(w->ring_next - now_us) : 0;
        if (timeout < 0 || d < timeout)
            timeout = d;
    }
    if (timeout != 0 && w->last_sleep_us < w->coalesce_us) {
        /* busy (woken again soon after the last wait began): let this
         * window's events gather and take them in one turn */
        uint64_t now_us = an_now_us(), until = w->turn_start + w->coalesce_us;
        if (now_us < until && (timeout < 0 || timeout > (int64_t)(until - now_us))) {
            struct timespec hs = {0, (long)(until - now_us) * 1000};
            nanosleep(&hs, NULL);
            if (timeout > 0) /* the next timer is that much nearer */
                timeout -= (int64_t)(until - now_us);
        }
    }
    /* items whose producer saw us running and did not ring: no blocking */
    if (timeout != 0 && !inbox_sleep(&w->inbox))
        timeout = 0;
    w->wait_start = an_now_us();
    if (ev_loop_run_once_us(&w->loop, timeout) < 0) {
        log_error("worker %u: event loop: %s", w->id, strerror(errno));
        return -1;
    }
    if (inbox_waiting(&w->inbox)) /* posted while we ran: no doorbell came */
        run_inbox(w);
    tw_advance(&w->tw, w->now);
    end_of_turn(w);
    uint64_t busy = an_now_us() - w->turn_start;
    an_hist_add(&w->stats.loop_turn, busy);
    /* consolidation's measure (migrate.h): only this thread writes it */
    atomic_store_explicit(&w->busy_us,
                          atomic_load_explicit(&w->busy_us, memory_order_relaxed) + busy,
                          memory_order_relaxed);
    return 0;
}

void *worker_main(void *arg)
{
    worker_t *w = arg;
    while (!w->stopping && turn(w, -1) == 0)
        ;
    shutdown_worker(w);
    return NULL;
}

/* One turn of worker_main's loop, by hand (the in-process harness,
 * tests/harness/harness.h): the same turn, waiting at most timeout_ms
 * (0: not at all).  After a WM_STOP the worker is shut down as worker_main
 * does and 0 is returned; else 1, or -1 when the loop failed. */
int worker_turn(worker_t *w, int timeout_ms)
{
    if (w->stopping)
        return 0;
    if (turn(w, timeout_ms < 0 ? 0 : timeout_ms) < 0)
        return -1;
    if (!w->stopping)
        return 1;
    shutdown_worker(w);
    return 0;
}

/* Every second: the session gauges (sessions, inflight, queued) of this
 * worker, summed over its own sessions.  A walk of the session table costs
 * a few microseconds per thousand sessions; counting at every ring change
 * would put a store on the delivery path instead. */
static void on_gauge_timer(tw_timer_t *t)
{
    worker_t *w = container_of(t, worker_t, gauge_timer);
    uint64_t inflight = 0, queued = 0;
    for (size_t b = 0; b < w->by_sid.nbuckets; b++)
        for (sess_t *s = w->by_sid.buckets[b]; s; s = s->sid_next) {
            inflight += sq_len(&s->inflight);
            queued += sq_len(&s->queue);
        }
    atomic_store_explicit(&w->stats.sessions, w->by_sid.count, memory_order_relaxed);
    atomic_store_explicit(&w->stats.inflight, inflight, memory_order_relaxed);
    atomic_store_explicit(&w->stats.queued, queued, memory_order_relaxed);
    /* A burst of acknowledged deliveries is over (a QoS 1 broadcast): each
     * freed its session's inflight ring and, for MQTT 3.1.1, its sess_ext_t
     * (~270 B a device, left in malloc's fast bins and holes between the
     * sessions' live allocations, which malloc gives back only when asked).
     * A burst whose output did not pass the turn arena's keep (under
     * ~15,000 small messages a worker, as a cluster node's share of a
     * broadcast) never reached on_obufs_timer's trim: once TRIM_ACKS
     * exchanges completed since the last trim and the last second saw
     * under a sixteenth of that, malloc_trim(0), a few ms once a burst. */
    uint64_t acks = acks_in(w);
    if (acks - w->trim_acks >= TRIM_ACKS && acks - w->gauge_acks < TRIM_ACKS / 16) {
        malloc_trim(0);
        w->trim_acks = acks;
    }
    w->gauge_acks = acks;
    tw_add(&w->tw, t, w->now + 1000u);
}

void worker_gauges_now(worker_t *w)
{
    tw_del(&w->tw, &w->gauge_timer);
    on_gauge_timer(&w->gauge_timer);
}

int worker_init(worker_t *w, server_t *srv, uint32_t id)
{
    w->srv = srv;
    w->id = id;
    w->now = an_now_ms();
    tw_init(&w->tw, w->now);
    w->rng = an_hash64(w->now ^ ((uint64_t)id + 1) * 0x9e3779b97f4a7c15ull) | 1;
    w->by_id.kind = SESS_BY_ID;
    w->by_sid.kind = SESS_BY_SID;
    tw_timer_init(&w->gauge_timer, on_gauge_timer);
    tw_add(&w->tw, &w->gauge_timer, w->now + 1000u);
    tw_timer_init(&w->accept_timer, on_accept_timer);
    w->reserve_fd = -1;
    reserve_open(w);
    if (ev_loop_init(&w->loop, EV_BATCH, after_poll) < 0 || inbox_init(&w->inbox) < 0) {
        log_error("worker %u: %s", id, strerror(errno));
        return -1;
    }
    w->scratch_size = 64 * 1024;
    w->scratch = an_malloc(w->scratch_size);
    linger_init(&w->lingers, &w->loop, &w->tw, w->scratch, w->scratch_size);
    w->outbox = an_calloc(srv->nworkers, sizeof(*w->outbox));
    w->ring_at = an_calloc(srv->nworkers, sizeof(*w->ring_at));
    w->coalesce_us = srv->conf.workers_coalesce_us;
    if (oarena_init(&w->obufs, BUF_ARENA_SIZE) < 0) /* then every buffer is malloc'd */
        log_warn("worker %u: no output arena (%s): output buffers from malloc", id,
                 strerror(errno));
    tw_timer_init(&w->obufs_timer, on_obufs_timer);
    w->mig_on = srv->conf.workers_migrate && srv->nworkers > 1;
    migrate_worker_start(w);
    ev_watcher_init(&w->inbox_ev, w->inbox.evfd, on_inbox);
    if (ev_watch_start(&w->loop, &w->inbox_ev, EV_READ) < 0)
        goto fail;
    for (uint32_t i = 0; i < srv->nlisteners; i++) {
        ev_watcher_init(&w->listen_ev[i], srv->listen_fds[i], on_listener);
        if (ev_watch_start(&w->loop, &w->listen_ev[i], EV_READ | EV_EXCLUSIVE) < 0)
            goto fail;
    }
    return 0;
fail:
    log_error("worker %u: event loop: %s", id, strerror(errno));
    return -1;
}

static void drop_item(server_t *srv, inbox_item_t *it)
{
    const worker_inbox_kind_t *k = &srv->inbox_kinds[it->kind];
    if (k->drop)
        k->drop(it);
}

/* After the thread has exited: drop what is still queued, free the rest. */
void worker_free(worker_t *w)
{
    if (w->srv == NULL)
        return; /* never initialised (start-up failed before it) */
    inbox_vec_t left = {0};
    if (w->inbox.evfd >= 0) {
        inbox_take(&w->inbox, &left);
        for (size_t i = 0; i < left.len; i++)
            drop_item(w->srv, &left.items[i]);
        inbox_vec_free(&left);
    }
    persist_save_sessions(w); /* graceful restart: sessions come back */
    /* every session still here (persistent ones) */
    for (size_t b = 0; b < w->by_sid.nbuckets; b++)
        while (w->by_sid.buckets && w->by_sid.buckets[b])
            sess_destroy(w, w->by_sid.buckets[b]);
    sess_table_free(&w->by_id);
    sess_table_free(&w->by_sid);
    persist_worker_final(w); /* what the wills published just now wrote */
    module_worker_free(w);
    if (w->outbox)
        for (uint32_t i = 0; i < w->srv->nworkers; i++) {
            /* wills published while sessions were freed above */
            for (size_t j = 0; j < w->outbox[i].len; j++)
                drop_item(w->srv, &w->outbox[i].items[j]);
            inbox_vec_free(&w->outbox[i]);
        }
    sess_ext_spares_free(w);
    free(w->outbox);
    free(w->ring_at);
    inbox_vec_free(&w->taken);
    oarena_destroy(&w->obufs);
    free(w->scratch);
    free(w->matches);
    free(w->targets);
    free(w->route_held);
    free(w->migs);
    migrate_worker_free(w);
    ev_loop_free(&w->loop);
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    if (w->inbox.evfd >= 0)
        inbox_destroy(&w->inbox);
}
