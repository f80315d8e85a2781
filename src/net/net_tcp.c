/* net_tcp.c -- the plain TCP transport (transport.h): recv() into the
 * caller's buffer, send() with MSG_NOSIGNAL.  Stateless: one const
 * instance serves every plain connection of every worker (nothing in it is
 * written), so a TCP connection allocates nothing for its transport.
 * Closing is the socket owner's (net_linger.h shuts it down gracefully).
 */
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* One recv() per readiness event: a bounded share of the loop turn. */
static int tcp_read(transport_t *t, int fd, tp_read_t *r)
{
    (void)t;
    ssize_t n = recv(fd, r->buf, r->cap, 0);
    r->data = r->buf;
    r->len = r->wire = n > 0 ? (size_t)n : 0;
    if (n > 0)
        return TP_OK;
    if (n == 0) {
        snprintf(r->why, sizeof(r->why), "connection closed by peer");
        return TP_CLOSED;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return TP_OK;
    snprintf(r->why, sizeof(r->why), "read error: %s", strerror(errno));
    return TP_ERROR;
}

static ssize_t tcp_write(transport_t *t, int fd, const uint8_t *data, size_t n, unsigned flags)
{
    (void)t;
    (void)flags;
    if (n == 0)
        return 0;
    for (;;) {
        ssize_t r = send(fd, data, n, MSG_NOSIGNAL);
        if (r > 0)
            return r;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (r == 0)
            errno = EPIPE;
        return TP_ERROR;
    }
}

static const transport_ops_t tcp_ops = {
    .name = "tcp",
    .read = tcp_read,
    .write = tcp_write,
};

const transport_t tp_tcp_instance = {.ops = &tcp_ops};
