/* fuzz_cl_wire.c -- libFuzzer: the node links' frame codec (cl_wire.h) on
 * arbitrary bytes, as a link's reader sees them.  Checks: every frame
 * split off lies inside the input; every decoder reads only inside its
 * frame's body (ASan); a message, a bit filter or its delta that decodes
 * encodes back to the same body; a REPL_DATA's operations (the store's flat
 * form, little-endian lengths) are read only inside them (store_raw_next),
 * split over three replicas by share (cl_share_split) into parts that hold
 * every operation once (or on every part: a family's delete) and go back
 * into a batch. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cl_share.h"
#include "cluster/cl_wire.h"
#include "store.h"

static size_t count_ops(const uint8_t *p, size_t len)
{
    size_t off = 0, n = 0;
    store_raw_op_t op;
    int rc;
    while ((rc = store_raw_next(p, len, &off, &op)) == 1) {
        if (op.at + op.size > len || off > len)
            abort();
        n++;
    }
    if (rc < 0)
        abort(); /* a part holds whole operations only */
    return n;
}

static void split_check(const uint8_t *ops, uint32_t olen)
{
    size_t off = 0, nops = 0, every = 0;
    store_raw_op_t op;
    int rc;
    while ((rc = store_raw_next(ops, olen, &off, &op)) == 1) {
        const uint8_t *pk;
        size_t pkl;
        if (op.at + op.size > olen)
            abort();
        if (cl_share_key(op.op, op.k, op.kl, &pk, &pkl) == 1) {
            if (pk < op.k || pk + pkl > op.k + op.kl)
                abort();
        } else {
            every++;
        }
        nops++;
    }
    static const char *const names[3] = {"a", "b", "c"};
    uint64_t seeds[3];
    for (int i = 0; i < 3; i++)
        seeds[i] = cl_share_seed(names[i]);
    cl_buf_t out[3] = {{0}};
    int src = cl_share_split(ops, olen, seeds, 3, out);
    if ((src == 0) != (rc == 0))
        abort();
    if (src == 0) {
        size_t total = 0;
        for (int i = 0; i < 3; i++) {
            total += count_ops(out[i].p, out[i].len);
            store_batch_t *b = store_batch_new();
            if (store_batch_append_raw(b, out[i].p, out[i].len) != 0)
                abort();
            store_batch_free(b);
        }
        if (total != nops + 2 * every)
            abort();
    }
    for (int i = 0; i < 3; i++)
        cl_buf_free(&out[i]);
}

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
        if (cl_dec_repl_data(copy, len, &seq, &flags, &ops, &olen) == 0) {
            if (len < 9 || ops != copy + 9 || olen != len - 9)
                abort();
            split_check(ops, olen);
        }
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
