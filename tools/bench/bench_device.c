/* bench_device.c -- antenna-bench's device mode: many MQTT 3.1.1 devices
 * that answer downlink commands at once (bench/commands.sh,
 * docs/benchmarks.md "Commands").
 *
 *   antenna-bench device -p PORT [-h HOST] [-n 10000] [-t 2] [--prefix dev-]
 *                        [--ready-file F] [--seconds 600]
 *
 * bench.c hands the command line over (bench_device_main) before its own
 * option parsing: the mode shares nothing with the pub/sub engine.
 *
 * Each of the -t threads owns n/t connections and one epoll (level
 * triggered).  A device connects (client id PREFIX + 5-digit index, clean
 * session), subscribes to $cmd/{id}/# (QoS 1), and for each command
 * PUBLISH it gets answers at once: PUBACK (QoS 1), then a QoS 0 PUBLISH
 * of {"status":"succeeded"} to the command's reply_topic (read from the
 * payload).  Connects are paced (at most 256 in progress per thread).
 * When every device is subscribed it writes --ready-file; it prints the
 * replies sent every second and exits after --seconds or on SIGTERM.
 * No allocation per message: one input and one output buffer per device.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP 8192
#define OUT_CAP 8192
#define PENDING_MAX 256

typedef struct {
    int fd;
    uint8_t state; /* 0 idle, 1 connecting, 2 connack wait, 3 suback wait, 4 ready */
    char id[32];
    uint8_t in[IN_CAP];
    size_t inl;
    uint8_t out[OUT_CAP];
    size_t outl;
} dev_t_;

typedef struct {
    int idx, first, count, ep;
    int nready, nfailed; /* this thread's: the connects no longer pending */
    dev_t_ *d;
} thr_t;

static const char *host = "127.0.0.1";
static int port, ndev = 10000, nthr = 2, seconds = 600;
static const char *prefix = "dev-", *ready_file;
static atomic_int ready, replies, failures;
static volatile sig_atomic_t stop;

static void on_sig(int s)
{
    (void)s;
    stop = 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static size_t put_str(uint8_t *p, const char *s, size_t n)
{
    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    memcpy(p + 2, s, n);
    return n + 2;
}

static size_t put_len(uint8_t *p, size_t n)
{
    size_t i = 0;
    do {
        uint8_t b = n % 128;
        n /= 128;
        p[i++] = (uint8_t)(b | (n ? 0x80 : 0));
    } while (n);
    return i;
}

/* Queue bytes for the device, flushing what the socket takes. */
static int dev_send(thr_t *t, dev_t_ *d, const uint8_t *b, size_t n)
{
    if (d->outl + n > OUT_CAP)
        return -1;
    if (n) {
        memcpy(d->out + d->outl, b, n);
        d->outl += n;
    }
    ssize_t w = send(d->fd, d->out, d->outl, MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN)
        return -1;
    if (w > 0) {
        memmove(d->out, d->out + w, d->outl - (size_t)w);
        d->outl -= (size_t)w;
    }
    struct epoll_event ev = {.events = EPOLLIN | (d->outl ? EPOLLOUT : 0), .data.ptr = d};
    epoll_ctl(t->ep, EPOLL_CTL_MOD, d->fd, &ev);
    return 0;
}

/* A framed packet (header byte, body) with its remaining length. */
static int send_pkt(thr_t *t, dev_t_ *d, uint8_t first, const uint8_t *body, size_t n)
{
    uint8_t buf[OUT_CAP];
    size_t k = 0;
    buf[k++] = first;
    k += put_len(buf + k, n);
    if (k + n > sizeof(buf))
        return -1;
    memcpy(buf + k, body, n);
    return dev_send(t, d, buf, k + n);
}

static int dev_start(thr_t *t, dev_t_ *d)
{
    d->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (d->fd < 0)
        return -1;
    int one = 1;
    setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(d->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
        return -1;
    d->state = 1;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = d};
    return epoll_ctl(t->ep, EPOLL_CTL_ADD, d->fd, &ev);
}

static int on_connected(thr_t *t, dev_t_ *d)
{
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err)
        return -1;
    uint8_t body[128];
    size_t k = put_str(body, "MQTT", 4);
    body[k++] = 4;    /* 3.1.1 */
    body[k++] = 0x02; /* clean session */
    body[k++] = 0x01; /* keepalive 300 s */
    body[k++] = 0x2c;
    k += put_str(body + k, d->id, strlen(d->id));
    d->state = 2;
    return send_pkt(t, d, 0x10, body, k);
}

/* A command: PUBACK, then the reply to its reply_topic. */
static int on_publish(thr_t *t, dev_t_ *d, uint8_t first, const uint8_t *b, size_t n)
{
    if (n < 2)
        return -1;
    size_t tl = (size_t)b[0] << 8 | b[1], off = 2 + tl;
    int qos = (first >> 1) & 3;
    if (qos) {
        if (off + 2 > n)
            return -1;
        uint8_t ack[2] = {b[off], b[off + 1]};
        off += 2;
        if (send_pkt(t, d, qos == 1 ? 0x40 : 0x50, ack, 2) < 0)
            return -1;
    }
    const char *pl = (const char *)b + off, *key = "\"reply_topic\":\"";
    size_t pn = n - off, kl = strlen(key);
    const char *r = memmem(pl, pn, key, kl);
    if (r == NULL)
        return 0; /* not a command */
    r += kl;
    const char *e = memchr(r, '"', (size_t)(pl + pn - r));
    if (e == NULL)
        return 0;
    static const char ok[] = "{\"status\":\"succeeded\"}";
    uint8_t body[1024];
    size_t rl = (size_t)(e - r);
    if (rl + sizeof(ok) + 2 > sizeof(body))
        return 0;
    size_t k = put_str(body, r, rl);
    memcpy(body + k, ok, sizeof(ok) - 1);
    k += sizeof(ok) - 1;
    atomic_fetch_add(&replies, 1);
    return send_pkt(t, d, 0x30, body, k);
}

static int on_packet(thr_t *t, dev_t_ *d, uint8_t first, const uint8_t *b, size_t n)
{
    switch (first >> 4) {
    case 2: { /* CONNACK */
        if (n < 2 || b[1] != 0)
            return -1;
        uint8_t body[128];
        size_t k = 0;
        body[k++] = 0;
        body[k++] = 1; /* packet id 1 */
        char f[64];
        int fl = snprintf(f, sizeof(f), "$cmd/%s/#", d->id);
        k += put_str(body + k, f, (size_t)fl);
        body[k++] = 1;
        d->state = 3;
        return send_pkt(t, d, 0x82, body, k);
    }
    case 9: /* SUBACK */
        if (d->state == 3) {
            d->state = 4;
            t->nready++;
            atomic_fetch_add(&ready, 1);
        }
        return 0;
    case 3:
        return on_publish(t, d, first, b, n);
    default:
        return 0;
    }
}

static int on_readable(thr_t *t, dev_t_ *d)
{
    ssize_t r = recv(d->fd, d->in + d->inl, IN_CAP - d->inl, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN))
        return -1;
    if (r < 0)
        return 0;
    d->inl += (size_t)r;
    size_t pos = 0;
    for (;;) {
        size_t len = 0, i = pos + 1, mul = 1;
        if (i >= d->inl)
            break;
        int done = 0;
        while (i < d->inl && i < pos + 5) {
            len += (size_t)(d->in[i] & 127) * mul;
            mul *= 128;
            if (!(d->in[i++] & 128)) {
                done = 1;
                break;
            }
        }
        if (!done || i + len > d->inl)
            break;
        if (on_packet(t, d, d->in[pos], d->in + i, len) < 0)
            return -1;
        pos = i + len;
    }
    memmove(d->in, d->in + pos, d->inl - pos);
    d->inl -= pos;
    if (d->inl == IN_CAP)
        return -1; /* a packet larger than the buffer */
    return 0;
}

static void *thr_main(void *arg)
{
    thr_t *t = arg;
    int next = 0, pending = 0;
    struct epoll_event evs[256];
    while (!stop) {
        while (next < t->count && pending < PENDING_MAX) {
            dev_t_ *d = &t->d[next++];
            if (dev_start(t, d) < 0) {
                if (d->fd >= 0)
                    close(d->fd);
                d->fd = -1;
                t->nfailed++;
                atomic_fetch_add(&failures, 1);
            }
            pending = next - t->nready - t->nfailed;
        }
        int n = epoll_wait(t->ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            dev_t_ *d = evs[i].data.ptr;
            int rc = 0;
            if (d->state == 1) {
                rc = on_connected(t, d);
            } else {
                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    rc = on_readable(t, d);
                if (rc == 0 && (evs[i].events & EPOLLOUT))
                    rc = dev_send(t, d, NULL, 0);
            }
            if (rc < 0) {
                if (d->state == 4)
                    t->nready--; /* dropped after it was ready */
                t->nfailed++;
                atomic_fetch_add(&failures, 1);
                epoll_ctl(t->ep, EPOLL_CTL_DEL, d->fd, NULL);
                close(d->fd);
                d->fd = -1;
                d->state = 0;
            }
        }
        pending = next - t->nready - t->nfailed;
    }
    return NULL;
}

int bench_device_main(int argc, char **argv)
{
    static const char usage[] = "usage: antenna-bench device -p PORT [-h HOST] [-n N] [-t THREADS] "
                                "[--prefix P] [--ready-file F] [--seconds S]\n";
    for (int i = 1; i < argc; i += 2) { /* OPTION VALUE pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (v == NULL) {
            fprintf(stderr, "%s: a value is missing\n", a);
            return 2;
        }
        if (strcmp(a, "-p") == 0)
            port = atoi(v);
        else if (strcmp(a, "-h") == 0)
            host = v;
        else if (strcmp(a, "-n") == 0)
            ndev = atoi(v);
        else if (strcmp(a, "-t") == 0)
            nthr = atoi(v);
        else if (strcmp(a, "--prefix") == 0)
            prefix = v;
        else if (strcmp(a, "--ready-file") == 0)
            ready_file = v;
        else if (strcmp(a, "--seconds") == 0)
            seconds = atoi(v);
        else {
            fputs(usage, stderr);
            return 2;
        }
    }
    if (port <= 0 || ndev <= 0 || nthr <= 0 || nthr > 64) {
        fprintf(stderr, "antenna-bench device: -p PORT is needed; -n, -t positive\n");
        return 2;
    }
    signal(SIGTERM, on_sig);
    signal(SIGINT, on_sig);
    signal(SIGPIPE, SIG_IGN);
    dev_t_ *devs = calloc((size_t)ndev, sizeof(*devs));
    thr_t *thr = calloc((size_t)nthr, sizeof(*thr));
    if (devs == NULL || thr == NULL)
        return 1;
    for (int i = 0; i < ndev; i++) {
        devs[i].fd = -1;
        snprintf(devs[i].id, sizeof(devs[i].id), "%s%05d", prefix, i);
    }
    pthread_t tid[64];
    for (int i = 0, first = 0; i < nthr; i++) {
        thr[i].idx = i;
        thr[i].first = first;
        thr[i].count = ndev / nthr + (i < ndev % nthr);
        thr[i].d = devs + first;
        thr[i].ep = epoll_create1(0);
        first += thr[i].count;
        pthread_create(&tid[i], NULL, thr_main, &thr[i]);
    }
    uint64_t start = now_ms(), last = start;
    int said_ready = 0, last_replies = 0;
    while (!stop && now_ms() - start < (uint64_t)seconds * 1000u) {
        usleep(50000);
        int r = atomic_load(&ready), f = atomic_load(&failures);
        if (!said_ready && r + f >= ndev) {
            said_ready = 1;
            fprintf(stderr, "antenna-bench device: %d ready, %d failed, in %.2f s\n", r, f,
                    (double)(now_ms() - start) / 1000.0);
            if (ready_file) {
                FILE *fp = fopen(ready_file, "w");
                if (fp) {
                    fprintf(fp, "%d\n", r);
                    fclose(fp);
                }
            }
        }
        if (now_ms() - last >= 1000) {
            last = now_ms();
            int rp = atomic_load(&replies);
            if (rp != last_replies)
                fprintf(stderr, "antenna-bench device: %d replies sent\n", rp);
            last_replies = rp;
        }
    }
    stop = 1;
    for (int i = 0; i < nthr; i++)
        pthread_join(tid[i], NULL);
    printf("antenna-bench device: %d devices ready, %d failures, %d replies sent\n",
           atomic_load(&ready), atomic_load(&failures), atomic_load(&replies));
    for (int i = 0; i < ndev; i++)
        if (devs[i].fd >= 0)
            close(devs[i].fd);
    free(devs);
    free(thr);
    return 0;
}
