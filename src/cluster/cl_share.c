/* cl_share.c -- a store key's share and its replica (cl_share.h). */
#include "cl_share.h"

#include <string.h>

#include "store.h"

int cl_share_key(int op, const uint8_t *k, size_t kl, const uint8_t **pk, size_t *pkl)
{
    if (kl > 0 && k[0] == 0)
        return 0; /* a meta key: every copy is a store with its format version */
    if (kl >= 2 && k[1] == '/' && (k[0] == 'q' || k[0] == 'i')) {
        size_t n = kl >= 4 ? (size_t)k[2] << 8 | k[3] : 0;
        if (kl >= 4 && n > 0 && kl >= 4 + n) { /* u16 n, client id, then seq or pid */
            *pk = k + 4;
            *pkl = n;
            return 1;
        }
        if (op == STORE_RAW_DEL_PREFIX)
            return 0; /* the family, or a part of it */
    } else if (kl >= 2 && k[0] == 's' && k[1] == '/') {
        if (op == STORE_RAW_DEL_PREFIX)
            return 0; /* an id's prefix is the prefix of others' too */
        *pk = k + 2;
        *pkl = kl - 2;
        return 1;
    } else if (op == STORE_RAW_DEL_PREFIX) {
        return 0;
    }
    *pk = k;
    *pkl = kl;
    return 1;
}

uint64_t cl_share_seed(const char *peer)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = peer; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull;
}

uint64_t cl_share_hash(uint64_t seed, const uint8_t *pk, size_t pkl)
{
    uint64_t h = seed;
    for (size_t i = 0; i < pkl; i++)
        h = (h ^ pk[i]) * 1099511628211ull;
    h ^= h >> 29; /* FNV-1a's low bits mix poorly: a final avalanche */
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

int cl_share_pick(const uint64_t *seeds, int n, const uint8_t *pk, size_t pkl)
{
    int best = 0;
    uint64_t bh = cl_share_hash(seeds[0], pk, pkl);
    for (int i = 1; i < n; i++) {
        uint64_t h = cl_share_hash(seeds[i], pk, pkl);
        if (h > bh)
            best = i, bh = h;
    }
    return best;
}

static void put(cl_buf_t *b, const uint8_t *p, size_t n)
{
    cl_buf_reserve(b, n);
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

int cl_share_split(const uint8_t *ops, size_t len, const uint64_t *seeds, int n, cl_buf_t *out)
{
    size_t off = 0;
    store_raw_op_t op;
    int rc;
    while ((rc = store_raw_next(ops, len, &off, &op)) == 1) {
        const uint8_t *pk;
        size_t pkl;
        if (n == 1 || !cl_share_key(op.op, op.k, op.kl, &pk, &pkl)) {
            for (int i = 0; i < n; i++)
                put(&out[i], ops + op.at, op.size);
        } else {
            put(&out[cl_share_pick(seeds, n, pk, pkl)], ops + op.at, op.size);
        }
    }
    return rc < 0 ? -1 : 0;
}
