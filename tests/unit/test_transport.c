/* test_transport.c -- the transport table (transport.h) over a socketpair:
 * plain tcp (reads hand back the caller's buffer, nothing now, peer
 * closed, a write to a closed peer), and ws stacked on tcp (the upgrade,
 * a client frame in, one binary message out, the close frame at
 * shutdown). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net_ws.h"
#include "transport.h"

static int rd(transport_t *tp, int fd, uint8_t *buf, size_t cap, tp_read_t *in)
{
    in->buf = buf;
    in->cap = cap;
    return tp->ops->read(tp, fd, in);
}

/* sv[0]: the broker's side (non-blocking), sv[1]: the client's. */
static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
}

static void test_tcp_read_write(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    transport_t *tp = tp_tcp();
    assert_string_equal(tp->ops->name, "tcp");
    assert_int_equal(tp_pending(tp), 0);
    assert_null(tp_waiting(tp));
    assert_null(tp_handshaker(tp));

    uint8_t buf[64];
    tp_read_t in;
    /* nothing there: TP_OK, no bytes */
    assert_int_equal(rd(tp, sv[0], buf, sizeof(buf), &in), TP_OK);
    assert_int_equal(in.len, 0);
    assert_int_equal(in.wire, 0);

    /* bytes in: handed back in the caller's buffer, no copy */
    assert_int_equal(write(sv[1], "hello", 5), 5);
    assert_int_equal(rd(tp, sv[0], buf, sizeof(buf), &in), TP_OK);
    assert_ptr_equal(in.data, buf);
    assert_int_equal(in.len, 5);
    assert_int_equal(in.wire, 5);
    assert_memory_equal(in.data, "hello", 5);

    /* a read is bounded by cap */
    assert_int_equal(write(sv[1], "0123456789", 10), 10);
    assert_int_equal(rd(tp, sv[0], buf, 4, &in), TP_OK);
    assert_int_equal(in.len, 4);
    assert_int_equal(rd(tp, sv[0], buf, sizeof(buf), &in), TP_OK);
    assert_int_equal(in.len, 6);

    /* bytes out; n = 0 is a flush of nothing */
    assert_int_equal(tp->ops->write(tp, sv[0], (const uint8_t *)"abc", 3, 0), 3);
    assert_int_equal(tp->ops->write(tp, sv[0], NULL, 0, 0), 0);
    char got[8];
    assert_int_equal(read(sv[1], got, sizeof(got)), 3);
    assert_memory_equal(got, "abc", 3);

    /* the socket full: 0 taken, not an error */
    static uint8_t big[1 << 16];
    ssize_t r;
    int rounds = 0;
    while ((r = tp->ops->write(tp, sv[0], big, sizeof(big), 0)) > 0 && rounds++ < 1000)
        ;
    assert_int_equal(r, 0);

    /* the peer closes (a fresh pair: closing with unread input would be a
     * reset): TP_CLOSED with a reason */
    close(sv[0]);
    close(sv[1]);
    pair(sv);
    close(sv[1]);
    int rc;
    rounds = 0;
    while ((rc = rd(tp, sv[0], buf, sizeof(buf), &in)) == TP_OK && rounds++ < 10)
        ;
    assert_int_equal(rc, TP_CLOSED);
    assert_string_equal(in.why, "connection closed by peer");
    /* and a write to it fails with errno (no SIGPIPE: MSG_NOSIGNAL) */
    assert_int_equal(tp->ops->write(tp, sv[0], (const uint8_t *)"x", 1, 0), TP_ERROR);
    assert_int_equal(errno, EPIPE);
    tp_free(tp); /* the shared instance: nothing to free */
    close(sv[0]);
}

/* Read everything the client side has, up to cap. */
static size_t client_read(int fd, uint8_t *out, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = recv(fd, out + got, cap - got, MSG_DONTWAIT)) > 0)
        got += (size_t)n;
    return got;
}

static void test_ws_over_tcp(void **state)
{
    (void)state;
    int sv[2];
    pair(sv);
    conf_listener_t l;
    memset(&l, 0, sizeof(l));
    snprintf(l.ws_path, sizeof(l.ws_path), "/mqtt");
    l.ws_max_frame = 1 << 20;
    transport_t *tp = ws_transport_new(&l, tp_tcp());
    assert_string_equal(tp->ops->name, "ws");
    assert_ptr_equal(tp->lower, tp_tcp());
    assert_null(tp_handshaker(tp));
    assert_string_equal(tp_waiting(tp), "WebSocket upgrade");

    static const char req[] = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Protocol: mqtt\r\n\r\n";
    /* the request, then a masked binary frame carrying 2 bytes */
    uint8_t frame[] = {0x82, 0x82, 1, 2, 3, 4, 0xc0 ^ 1, 0x00 ^ 2};
    assert_int_equal(write(sv[1], req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    assert_int_equal(write(sv[1], frame, sizeof(frame)), (ssize_t)sizeof(frame));

    uint8_t buf[4096];
    tp_read_t in;
    assert_int_equal(rd(tp, sv[0], buf, sizeof(buf), &in), TP_OK);
    assert_null(tp_waiting(tp));
    assert_int_equal(in.wire, sizeof(req) - 1 + sizeof(frame));
    assert_int_equal(in.len, 2);
    assert_int_equal(in.data[0], 0xc0); /* PINGREQ */
    assert_int_equal(in.data[1], 0x00);
    assert_true(tp_pending(tp) > 0); /* the 101 response */

    /* write: the 101 first, then our bytes as one binary message */
    assert_int_equal(tp->ops->write(tp, sv[0], (const uint8_t *)"\xd0\x00", 2, 0), 2);
    assert_int_equal(tp_pending(tp), 0);
    uint8_t out[4096];
    size_t n = client_read(sv[1], out, sizeof(out));
    assert_true(n > 4);
    assert_memory_equal(out, "HTTP/1.1 101 ", 13);
    assert_int_equal(out[n - 4], 0x82); /* FIN, binary */
    assert_int_equal(out[n - 3], 2);    /* unmasked, 2 bytes */
    assert_int_equal(out[n - 2], 0xd0); /* PINGRESP */

    /* shutdown: a close frame (1000) */
    tp->ops->shutdown(tp, sv[0]);
    n = client_read(sv[1], out, sizeof(out));
    assert_int_equal(n, 4);
    assert_int_equal(out[0], 0x88);
    assert_int_equal(out[2], 0x03);
    assert_int_equal(out[3], 0xe8);
    tp_free(tp);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp_read_write),
        cmocka_unit_test(test_ws_over_tcp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
