/* bench_worker.c -- one worker process: its epoll loop, phases, pacing and
 * timers.
 *
 * A loop turn, in fixed order:
 *   1. epoll_wait (level-triggered, up to 1024 events), with a timeout from
 *      the next timer, the next paced send or connect, or 0 when there is
 *      more work right now (a flat-out publisher that can still send);
 *   2. events: the parent's control pipe; per client, a connect completing,
 *      one recv() with every packet in it, or the socket taking output again;
 *   3. timers due (at most 8192 per turn): connect timeouts, keepalive
 *      PINGREQs, reconnect times;
 *   4. the phase's work: start connections (--conn-rate, and at most
 *      --conn-pending handshakes at once), publish (paced by the clock: the
 *      messages due since GO, round-robin over publishers with room, or flat
 *      out: up to 64 messages / 64 KiB per publisher per turn), or drain;
 *   5. one send() per connection with output;
 *   6. a TICK to the parent once a second.
 * Every loop is bounded per turn (events, timers, connects, messages), and
 * every phase by time: the connect phase by --setup-timeout, the run by GO +
 * --warmup + --duration, the drain by --drain, the close by one second; a
 * worker whose parent disappears exits.
 *
 * Timers: one per client (its state decides the meaning), in a binary
 * min-heap of client indices, so 19,000 keepalives cost nothing until due.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench_worker.h"
#include "util.h"

#define CTL_TAG UINT64_MAX
#define MAX_EVENTS 1024
#define TIMER_BUDGET 8192
#define CONNECT_BUDGET 256
#define FLAT_BATCH 64
#define FLAT_BYTES 65536
#define DRAIN_IDLE_NS (500 * NS_PER_MS)
#define CLOSE_WAIT_NS (1000 * NS_PER_MS)

wk_t W;

uint64_t rng_next(void)
{
    /* xorshift64* */
    uint64_t x = W.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    W.rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ---- timer heap ------------------------------------------------------------------ */

static inline uint64_t hkey(uint32_t pos)
{
    return W.cl[W.heap[pos]].deadline;
}

static void heap_place(uint32_t pos, uint32_t ci)
{
    W.heap[pos] = ci;
    W.cl[ci].heap_pos = pos + 1;
}

static void sift_up(uint32_t pos)
{
    uint32_t ci = W.heap[pos];
    uint64_t k = W.cl[ci].deadline;
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (hkey(parent) <= k)
            break;
        heap_place(pos, W.heap[parent]);
        pos = parent;
    }
    heap_place(pos, ci);
}

static void sift_down(uint32_t pos)
{
    uint32_t ci = W.heap[pos];
    uint64_t k = W.cl[ci].deadline;
    for (;;) {
        uint32_t l = 2 * pos + 1, m = pos;
        uint64_t mk = k;
        if (l < W.nheap && hkey(l) < mk) {
            m = l;
            mk = hkey(l);
        }
        if (l + 1 < W.nheap && hkey(l + 1) < mk)
            m = l + 1;
        if (m == pos)
            break;
        heap_place(pos, W.heap[m]);
        pos = m;
    }
    heap_place(pos, ci);
}

void timer_set(client_t *c, uint64_t deadline)
{
    uint32_t ci = (uint32_t)(c - W.cl);
    c->deadline = deadline;
    if (c->heap_pos) {
        uint32_t pos = c->heap_pos - 1;
        sift_up(pos);
        sift_down(c->heap_pos - 1);
        return;
    }
    W.heap[W.nheap] = ci;
    c->heap_pos = ++W.nheap;
    sift_up(W.nheap - 1);
}

void timer_cancel(client_t *c)
{
    if (!c->heap_pos)
        return;
    uint32_t pos = c->heap_pos - 1;
    c->heap_pos = 0;
    W.nheap--;
    if (pos == W.nheap)
        return;
    heap_place(pos, W.heap[W.nheap]);
    sift_up(pos);
    sift_down(W.cl[W.heap[pos]].heap_pos - 1);
}

static void run_timers(void)
{
    for (uint32_t budget = TIMER_BUDGET; W.nheap && budget; budget--) {
        client_t *c = &W.cl[W.heap[0]];
        if (c->deadline > W.now)
            return;
        timer_cancel(c);
        client_on_timer(c);
    }
    if (W.nheap && W.cl[W.heap[0]].deadline <= W.now)
        W.spin = 1;
}

/* ---- lists -------------------------------------------------------------------------- */

void mark_dirty(client_t *c)
{
    if (!(c->flags & F_DIRTY)) {
        c->flags |= F_DIRTY;
        W.dirty[W.ndirty++] = (uint32_t)(c - W.cl);
    }
}

void set_active(client_t *c)
{
    if (!(c->flags & F_ACTIVE)) {
        c->flags |= F_ACTIVE;
        W.active[W.nactive++] = (uint32_t)(c - W.cl);
    }
}

static void flush_dirty(void)
{
    for (uint32_t i = 0; i < W.ndirty; i++) {
        client_t *c = &W.cl[W.dirty[i]];
        c->flags &= (uint8_t)~F_DIRTY;
        client_flush(c);
    }
    W.ndirty = 0;
}

/* ---- phases --------------------------------------------------------------------------- */

void on_client_ready(client_t *c, int first_time)
{
    (void)first_time;
    if (!(c->flags & F_SETTLED)) {
        c->flags |= F_SETTLED;
        W.settled++;
        if (W.phase == PH_SETUP)
            W.st.t[T_setup_done] = W.now;
    }
    if (g_opt.keepalive)
        timer_set(c, c->t_last_tx + (uint64_t)g_opt.keepalive * NS_PER_S);
    if (c->pub && g_opt.rate <= 0 && !g_opt.e2e_window && W.phase == PH_RUN &&
        client_can_publish(c))
        set_active(c);
}

void on_client_settled_failed(client_t *c)
{
    c->flags |= F_SETTLED;
    W.settled++;
}

static void report(uint32_t type)
{
    if (send_msg(W.rep_fd, type, &W.st, sizeof(W.st), NULL, 0) < 0)
        _exit(3); /* the parent is gone */
}

static void start_connects(void)
{
    if (W.next_start >= W.ncl)
        return;
    uint64_t allowed = W.ncl;
    if (W.conn_rate > 0) {
        double el = (double)(W.now - W.t_setup_start) / 1e9;
        uint64_t a = (uint64_t)(el * W.conn_rate) + 1;
        if (a < allowed)
            allowed = a;
    }
    uint32_t budget = CONNECT_BUDGET;
    while (W.next_start < allowed && W.pending < W.pending_max && budget) {
        client_t *c = &W.cl[W.next_start++];
        client_start(c);
        budget--;
    }
    if (!budget && W.next_start < allowed && W.pending < W.pending_max)
        W.spin = 1;
}

static void publish_paced(void)
{
    double el = (double)(W.now - W.t0) / 1e9;
    uint64_t due = (uint64_t)(el * W.pub_rate);
    if (due <= W.issued)
        return;
    uint64_t credits = due - W.issued;
    uint64_t cap = (uint64_t)W.pub_rate + 1; /* at most one second behind */
    if (credits > cap) {
        W.st.c[C_pub_missed] += credits - cap;
        W.issued += credits - cap;
        credits = cap;
    }
    uint32_t budget = credits > 65536 ? 65536 : (uint32_t)credits;
    W.now = bench_now();
    while (budget) {
        client_t *c = NULL;
        for (uint32_t tries = 0; tries < W.npubs; tries++) {
            client_t *x = &W.cl[W.pubs[W.rr]];
            W.rr = W.rr + 1 == W.npubs ? 0 : W.rr + 1;
            if (client_can_publish(x)) {
                c = x;
                break;
            }
        }
        if (!c)
            return; /* nobody has room: wait for acks or the socket */
        client_publish(c);
        W.issued++;
        budget--;
    }
    if (W.issued < due)
        W.spin = 1;
}

/* Flat out with an end-to-end window (--e2e-window, one process, pubsub):
 * publish round-robin while the deliveries owed for what was sent, minus
 * what the local subscribers received (distinct) or know to be lost
 * (sequence gaps), stay under window x the fan-out of every publisher.  The broker's delivery rate then sets the pace, with a
 * bounded amount in the pipes, so latency means something even flat out. */
static void publish_window(void)
{
    uint64_t room = (uint64_t)g_opt.e2e_window * W.fan_total;
    uint32_t budget = 65536;
    W.now = bench_now();
    while (budget && W.exp_deliv < room + W.st.c[C_distinct] + W.st.c[C_gaps]) {
        client_t *c = NULL;
        for (uint32_t tries = 0; tries < W.npubs; tries++) {
            client_t *x = &W.cl[W.pubs[W.rr]];
            W.rr = W.rr + 1 == W.npubs ? 0 : W.rr + 1;
            if (x->pub->fan && client_can_publish(x)) {
                c = x;
                break;
            }
        }
        if (!c)
            return;
        client_publish(c);
        budget--;
    }
    if (!budget)
        W.spin = 1;
}

static void setup_window(void)
{
    char cid[128], f[1024];
    for (uint32_t k = 0; k < W.npubs; k++) {
        pub_t *p = W.cl[W.pubs[k]].pub;
        for (uint32_t i = 0; i < W.ncl; i++) {
            client_t *s = &W.cl[i];
            if (s->role != ROLE_SUB)
                continue;
            client_id_for(ROLE_SUB, s->idx, cid, sizeof(cid));
            int l = tmpl_expand(g_opt.sub_topic.text, s->idx, cid, NULL, f, sizeof(f));
            if (l > 0 && topic_matches(f, (size_t)l, p->topic, p->topic_len))
                p->fan++;
        }
        W.fan_total += p->fan;
    }
    if (!W.fan_total) {
        fprintf(stderr, "antenna-bench: --e2e-window: no subscriber matches any publisher\n");
        _exit(2);
    }
}

static void publish_flat(void)
{
    W.now = bench_now();
    for (uint32_t k = 0; k < W.nactive;) {
        client_t *c = &W.cl[W.active[k]];
        uint32_t n = 0;
        while (n < FLAT_BATCH && !(c->flags & F_WANT_OUT) && c->olen - c->ooff < FLAT_BYTES &&
               client_can_publish(c)) {
            client_publish(c);
            n++;
        }
        if ((c->flags & F_WANT_OUT) || !client_can_publish(c)) {
            c->flags &= (uint8_t)~F_ACTIVE;
            W.active[k] = W.active[--W.nactive];
            continue;
        }
        k++;
    }
}

static void enter_run(uint64_t t0)
{
    W.t0 = t0;
    W.t_meas = t0 + (uint64_t)(g_opt.warmup * 1e9);
    W.t_end = W.t_meas + (uint64_t)(g_opt.duration * 1e9);
    W.phase = PH_RUN;
    if (g_opt.rate <= 0 && !g_opt.e2e_window)
        for (uint32_t k = 0; k < W.npubs; k++) {
            client_t *c = &W.cl[W.pubs[k]];
            if (client_can_publish(c))
                set_active(c);
        }
}

static void enter_drain(void)
{
    W.phase = PH_DRAIN;
    W.t_drain = W.now;
    W.st.t[T_run_end] = W.now;
    for (uint32_t k = 0; k < W.nactive; k++)
        W.cl[W.active[k]].flags &= (uint8_t)~F_ACTIVE;
    W.nactive = 0;
}

static void send_final(void)
{
    bench_final_t *f = an_calloc(1, sizeof(*f));
    f->st = W.st;
    f->lat = W.lat;
    f->conn = W.conn;
    f->recon = W.recon;
    f->npub = W.npubs;
    uint64_t *sent = an_calloc(W.npubs ? W.npubs : 1, sizeof(*sent));
    for (uint32_t k = 0; k < W.npubs; k++)
        sent[k] = W.cl[W.pubs[k]].pub->sent;
    if (send_msg(W.rep_fd, MSG_FINAL, f, sizeof(*f), sent, W.npubs * sizeof(*sent)) < 0)
        _exit(3);
    free(sent);
    free(f);
}

static void enter_closing(void)
{
    send_final();
    W.phase = PH_CLOSING;
    W.t_close_deadline = W.now + CLOSE_WAIT_NS;
    for (uint32_t i = 0; i < W.ncl; i++)
        client_begin_close(&W.cl[i]);
}

static int all_closed(void)
{
    for (uint32_t i = 0; i < W.ncl; i++)
        if (W.cl[i].fd >= 0)
            return 0;
    return 1;
}

static void step_phase(void)
{
    switch (W.phase) {
    case PH_SETUP:
        start_connects();
        if (W.settled >= W.ncl || W.now >= W.setup_deadline) {
            report(MSG_READY);
            W.phase = PH_WAIT;
        }
        break;
    case PH_WAIT:
        start_connects();
        break;
    case PH_RUN:
        start_connects();
        if (W.now >= W.t_end || W.stop_requested ||
            (g_opt.limit && W.npubs && W.pubs_done == W.npubs)) {
            enter_drain();
            break;
        }
        if (W.npubs) {
            if (g_opt.rate > 0)
                publish_paced();
            else if (g_opt.e2e_window)
                publish_window();
            else
                publish_flat();
        }
        break;
    case PH_DRAIN: {
        uint64_t quiet_since = W.last_recv > W.t_drain ? W.last_recv : W.t_drain;
        int idle = W.sp->nsub == 0 || W.now - quiet_since >= DRAIN_IDLE_NS;
        if ((W.st.c[C_pub_inflight] == 0 && idle) ||
            W.now >= W.t_drain + (uint64_t)(g_opt.drain * 1e9))
            enter_closing();
        break;
    }
    case PH_CLOSING:
        if (W.now >= W.t_close_deadline || all_closed()) {
            for (uint32_t i = 0; i < W.ncl; i++)
                if (W.cl[i].fd >= 0)
                    client_close_now(&W.cl[i]);
            _exit(0);
        }
        break;
    }
}

static int next_timeout(void)
{
    if (W.spin || W.nactive)
        return 0;
    uint64_t t = W.now + NS_PER_S;
    if (W.next_tick < t)
        t = W.next_tick;
    if (W.nheap && W.cl[W.heap[0]].deadline < t)
        t = W.cl[W.heap[0]].deadline;
    if (W.phase <= PH_RUN && W.next_start < W.ncl && W.pending < W.pending_max) {
        if (W.conn_rate <= 0)
            return 0;
        uint64_t ts = W.t_setup_start + (uint64_t)((double)W.next_start / W.conn_rate * 1e9);
        if (ts < t)
            t = ts;
    }
    switch (W.phase) {
    case PH_SETUP:
        if (W.setup_deadline < t)
            t = W.setup_deadline;
        break;
    case PH_RUN:
        if (W.t_end < t)
            t = W.t_end;
        if (g_opt.rate > 0 && W.npubs) {
            uint64_t tn = W.t0 + (uint64_t)((double)(W.issued + 1) / W.pub_rate * 1e9);
            /* credits we could not place (no room) are retried each ms */
            if (tn <= W.now)
                tn = W.now + NS_PER_MS;
            if (tn < t)
                t = tn;
        }
        break;
    case PH_DRAIN: {
        uint64_t td = W.t_drain + (uint64_t)(g_opt.drain * 1e9);
        uint64_t ti = (W.last_recv > W.t_drain ? W.last_recv : W.t_drain) + DRAIN_IDLE_NS;
        if (td < t)
            t = td;
        if (ti < t)
            t = ti;
        break;
    }
    case PH_CLOSING:
        if (W.t_close_deadline < t)
            t = W.t_close_deadline;
        break;
    default:
        break;
    }
    if (t <= W.now)
        return 0;
    uint64_t ms = (t - W.now + NS_PER_MS - 1) / NS_PER_MS;
    return ms > 1000 ? 1000 : (int)ms;
}

static void handle_ctl(void)
{
    bench_ctl_t m;
    ssize_t n = read(W.ctl_fd, &m, sizeof(m));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        _exit(4); /* parent gone: sockets close with the process */
    if (n != (ssize_t)sizeof(m))
        return;
    if (m.type == CTL_GO && W.phase <= PH_WAIT) {
        if (W.phase == PH_SETUP)
            report(MSG_READY);
        enter_run(m.t0);
    } else if (m.type == CTL_STOP) {
        W.stop_requested = 1;
        if (W.phase < PH_RUN) {
            /* stopped before GO: finish at once */
            if (W.phase == PH_SETUP)
                report(MSG_READY);
            W.t0 = W.t_meas = W.t_end = W.now;
            enter_drain();
        }
    }
}

void worker_main(const bench_split_t *sp, int rep_fd, int ctl_fd)
{
    signal(SIGINT, SIG_IGN); /* the parent handles ^C and tells us */
    signal(SIGPIPE, SIG_IGN);
    memset(&W, 0, sizeof(W));
    W.sp = sp;
    W.rep_fd = rep_fd;
    W.ctl_fd = ctl_fd;
    W.now = bench_now();
    W.rng = W.now ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15ull;
    if (!W.rng)
        W.rng = 1;
    W.ncl = sp->nconn + sp->npub + sp->nsub;
    W.cl = an_calloc(W.ncl ? W.ncl : 1, sizeof(*W.cl));
    W.dirty = an_calloc(W.ncl ? W.ncl : 1, sizeof(uint32_t));
    W.active = an_calloc(W.ncl ? W.ncl : 1, sizeof(uint32_t));
    W.heap = an_calloc(W.ncl ? W.ncl : 1, sizeof(uint32_t));
    W.pubs = an_calloc(sp->npub ? sp->npub : 1, sizeof(uint32_t));
    /* subscribers first, so they are subscribed before publishers connect */
    uint32_t k = 0;
    for (uint32_t i = 0; i < sp->nsub; i++, k++)
        client_init(&W.cl[k], ROLE_SUB, sp->sub_first + i, sp->sub_first + i);
    for (uint32_t i = 0; i < sp->npub; i++, k++) {
        client_init(&W.cl[k], ROLE_PUB, sp->pub_first + i, g_opt.sub_count + sp->pub_first + i);
        W.pubs[W.npubs++] = k;
    }
    for (uint32_t i = 0; i < sp->nconn; i++, k++)
        client_init(&W.cl[k], ROLE_CONN, sp->conn_first + i, sp->conn_first + i);
    W.st.c[C_clients] = W.ncl;
    W.rbuf_size = 128 * 1024;
    W.rbuf = an_malloc(W.rbuf_size);
    W.payload = an_malloc(g_opt.size ? g_opt.size : 1);
    memset(W.payload, 'x', g_opt.size);
    hist_init(&W.lat);
    hist_init(&W.conn);
    hist_init(&W.recon);
    double pend = (double)g_opt.conn_pending * sp->share;
    W.pending_max = pend < 1 ? 1 : (uint32_t)pend;
    W.conn_rate = g_opt.conn_rate * sp->share;
    if (g_opt.pub_count && sp->npub)
        W.pub_rate = g_opt.rate * (double)sp->npub / (double)g_opt.pub_count;

    if (g_opt.e2e_window && g_opt.rate <= 0)
        setup_window();

    W.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (W.epfd < 0) {
        perror("antenna-bench: epoll_create1");
        _exit(2);
    }
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = CTL_TAG};
    epoll_ctl(W.epfd, EPOLL_CTL_ADD, ctl_fd, &e);

    W.phase = PH_SETUP;
    W.t_setup_start = W.now;
    W.setup_deadline = W.now + (uint64_t)(g_opt.setup_timeout * 1e9);
    /* ticks land just before the parent's progress lines (same origin) */
    W.next_tick = sp->t_origin + NS_PER_S - 50 * NS_PER_MS;
    if (W.ncl == 0) {
        report(MSG_READY);
        W.phase = PH_WAIT;
    }

    struct epoll_event *evs = an_calloc(MAX_EVENTS, sizeof(*evs));
    for (;;) {
        int timeout = next_timeout();
        int n = epoll_wait(W.epfd, evs, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR) {
            perror("antenna-bench: epoll_wait");
            _exit(2);
        }
        W.now = bench_now();
        W.spin = 0;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == CTL_TAG)
                handle_ctl();
            else
                client_on_event(&W.cl[evs[i].data.u64], evs[i].events);
        }
        W.now = bench_now();
        run_timers();
        step_phase();
        flush_dirty();
        if (W.now >= W.next_tick) {
            report(MSG_TICK);
            while (W.next_tick <= W.now)
                W.next_tick += NS_PER_S;
        }
    }
}
