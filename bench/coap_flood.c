/* coap_flood.c -- a lean CoAP publish load generator for bench/coap_pub.sh
 * (GEN=flood): the same requests as coap_pub.c, without libcoap on the
 * client side, so that the load generator leaves the machine's cores to
 * the broker.
 *
 *   coap_flood HOST PORT SECONDS SOCKETS WINDOW PAYLOAD_BYTES
 *
 * SOCKETS connected UDP sockets each keep WINDOW non-confirmable
 * PUT /ps/bench/up requests outstanding: every answer read (recvmmsg, up to
 * 64 per call) lets one more go (sendmmsg, a batch per socket and turn).
 * The requests are encoded by hand (RFC 7252: version 1, NON, a 4-byte
 * token, three Uri-Path options, the payload) with a fresh message id and
 * token each.  A socket that got no answer for 200 ms has its window
 * refilled (datagrams lost).  Prints the requests answered per second and
 * the answers that were not 2.xx, as coap_pub does.  A bench tool: one
 * thread, its state in main.
 */
#define _GNU_SOURCE /* sendmmsg, recvmmsg */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_PAYLOAD 1024
#define HDR 24 /* header 4 + token 4 + options "ps" "bench" "up" 3 + 6 + 3 + marker 1, rounded */

typedef struct {
    int fd;
    uint32_t outstanding;
    double last_rx;
} sock_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One request into out: its length. */
static size_t encode(uint8_t *out, uint16_t mid, uint32_t token, const uint8_t *pl, size_t pll)
{
    size_t n = 0;
    out[n++] = 0x54; /* version 1, NON, token length 4 */
    out[n++] = 0x03; /* PUT */
    out[n++] = (uint8_t)(mid >> 8);
    out[n++] = (uint8_t)mid;
    memcpy(out + n, &token, 4);
    n += 4;
    out[n++] = 0xB2; /* Uri-Path (11), 2 bytes */
    memcpy(out + n, "ps", 2);
    n += 2;
    out[n++] = 0x05; /* Uri-Path again, 5 bytes */
    memcpy(out + n, "bench", 5);
    n += 5;
    out[n++] = 0x02;
    memcpy(out + n, "up", 2);
    n += 2;
    out[n++] = 0xFF;
    memcpy(out + n, pl, pll);
    return n + pll;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: coap_flood HOST PORT SECONDS SOCKETS WINDOW PAYLOAD_BYTES\n");
        return 2;
    }
    double secs = atof(argv[3]);
    int nsock = atoi(argv[4]), window = atoi(argv[5]);
    size_t pll = (size_t)atoi(argv[6]);
    if (nsock < 1 || nsock > 4096 || window < 1 || window > BATCH || pll > MAX_PAYLOAD) {
        fprintf(stderr, "coap_flood: 1..4096 sockets, window 1..%d, payload <= %d\n", BATCH,
                MAX_PAYLOAD);
        return 2;
    }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
        fprintf(stderr, "coap_flood: %s: not an IPv4 address\n", argv[1]);
        return 2;
    }
    static uint8_t pl[MAX_PAYLOAD], out[BATCH][HDR + MAX_PAYLOAD], in[BATCH][256];
    memset(pl, 'x', sizeof(pl));
    int ep = epoll_create1(0);
    sock_t *s = calloc((size_t)nsock, sizeof(*s));
    if (ep < 0 || s == NULL) {
        perror("coap_flood");
        return 1;
    }
    double start = now_s();
    for (int i = 0; i < nsock; i++) {
        s[i].fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        if (s[i].fd < 0 || connect(s[i].fd, (struct sockaddr *)&to, sizeof(to)) < 0) {
            perror("coap_flood: socket");
            return 1;
        }
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, s[i].fd, &e);
        s[i].last_rx = start;
    }
    struct mmsghdr mo[BATCH], mi[BATCH];
    struct iovec io[BATCH], ii[BATCH];
    for (int k = 0; k < BATCH; k++) {
        io[k].iov_base = out[k];
        ii[k] = (struct iovec){in[k], sizeof(in[k])};
        mi[k].msg_hdr = (struct msghdr){.msg_iov = &ii[k], .msg_iovlen = 1};
    }
    uint64_t answered = 0, refused = 0, lost_refills = 0;
    uint32_t seq = 1;
    double end = start + secs;
    for (;;) {
        double t = now_s();
        if (t >= end)
            break;
        for (int i = 0; i < nsock; i++) { /* fill every window */
            sock_t *x = &s[i];
            if (x->outstanding > 0 && t - x->last_rx > 0.2) {
                x->outstanding = 0; /* went silent: lost, start again */
                x->last_rx = t;
                lost_refills++;
            }
            int n = 0;
            while (x->outstanding + (uint32_t)n < (uint32_t)window) {
                uint32_t id = seq++;
                io[n].iov_len = encode(out[n], (uint16_t)id, id, pl, pll);
                mo[n].msg_hdr = (struct msghdr){.msg_iov = &io[n], .msg_iovlen = 1};
                n++;
            }
            if (n > 0) {
                int sent = sendmmsg(x->fd, mo, (unsigned)n, 0);
                if (sent > 0)
                    x->outstanding += (uint32_t)sent;
            }
        }
        struct epoll_event ev[64];
        int ne = epoll_wait(ep, ev, 64, 50);
        for (int j = 0; j < ne; j++) {
            sock_t *x = &s[ev[j].data.u32];
            int got = recvmmsg(x->fd, mi, BATCH, MSG_DONTWAIT, NULL);
            if (got <= 0)
                continue;
            for (int k = 0; k < got; k++) {
                if (mi[k].msg_len >= 4 && (in[k][1] >> 5) != 2)
                    refused++;
            }
            answered += (uint64_t)got;
            x->outstanding = x->outstanding > (uint32_t)got ? x->outstanding - (uint32_t)got : 0;
            x->last_rx = now_s();
        }
    }
    double took = now_s() - start;
    printf("answered: %llu in %.1f s: %.0f requests/s; not 2.xx: %llu; windows refilled after a "
           "loss: %llu\n",
           (unsigned long long)answered, took, answered / took, (unsigned long long)refused,
           (unsigned long long)lost_refills);
    for (int i = 0; i < nsock; i++)
        close(s[i].fd);
    free(s);
    close(ep);
    return 0;
}
