/* fuzz_cl_wire.c -- libFuzzer: the node links' frame codec (cl_wire.h) on
 * arbitrary bytes, as a link's reader sees them.  Checks: every frame
 * split off lies inside the input; every decoder reads only inside its
 * frame's body (ASan); a message, a bit filter or its delta that decodes
 * encodes back to the same body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cl_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        uint8_t type;
        const uint8_t *body;
        uint32_t len;
        long n = cl_frame_next(data + off, size - off, 1u << 20, &type, &body, &len);
        if (n <= 0)
            break;
        if ((size_t)n > size - off || body + len != data + off + (size_t)n)
            abort();
        /* a copy of exactly the body: a read past it is ASan's */
        uint8_t *copy = malloc(len ? len : 1);
        memcpy(copy, body, len);
        cl_hello_t h;
        const uint8_t *p;
        uint16_t fl;
        uint64_t seq;
        cl_msg_t m;
        (void)cl_dec_hello(copy, len, &h);
        (void)cl_dec_auth(copy, len, &p);
        (void)cl_dec_route(copy, len, &p, &fl);
        (void)cl_dec_ack(copy, len, &seq);
        uint8_t flags, ok;
        const uint8_t *ops;
        uint32_t olen;
        /* REPL_DATA: the operations are the rest of the body */
        if (cl_dec_repl_data(copy, len, &seq, &flags, &ops, &olen) == 0 &&
            (len < 9 || ops != copy + 9 || olen != len - 9))
            abort();
        (void)cl_dec_repl_ack(copy, len, &seq, &ok);
        if (cl_dec_msg(copy, len, &m) == 0) {
            cl_buf_t b = {0};
            cl_enc_msg(&b, CL_F_MSG, &m);
            if (b.len != (size_t)len + 5 || memcmp(b.p + 5, copy, len) != 0)
                abort();
            cl_buf_free(&b);
        }
        /* ROUTE_BITS / ROUTE_BITS_DELTA: decode, then encode back */
        uint32_t blocks;
        uint64_t routes;
        size_t nent;
        if (cl_dec_bits(copy, len, &blocks, &routes, &p) == 0) {
            cl_buf_t b = {0};
            cl_enc_bits(&b, blocks, routes, p);
            if (b.len != (size_t)len + 5 || memcmp(b.p + 5, copy, len) != 0)
                abort();
            cl_buf_free(&b);
        }
        if (cl_dec_bits_delta(copy, len, &blocks, &routes, &p, &nent) == 0) {
            uint32_t *ent = malloc(nent ? nent * sizeof(*ent) : 1);
            for (size_t i = 0; i < nent; i++)
                ent[i] = cl_bits_ent(p, i);
            cl_buf_t b = {0};
            cl_enc_bits_delta(&b, blocks, routes, ent, nent);
            if (b.len != (size_t)len + 5 || memcmp(b.p + 5, copy, len) != 0)
                abort();
            cl_buf_free(&b);
            free(ent);
        }
        cl_groups_t g;
        if (cl_dec_msg_shared(copy, len, &g, &m) == 0) {
            cl_buf_t b = {0};
            cl_enc_msg_shared(&b, &g, &m);
            if (b.len != (size_t)len + 5 || memcmp(b.p + 5, copy, len) != 0)
                abort();
            cl_buf_free(&b);
        }
        free(copy);
        off += (size_t)n;
    }
    return 0;
}
