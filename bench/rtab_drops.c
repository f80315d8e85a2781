/* rtab_drops.c -- what a 53-node connect storm's drops of peers' exact
 * routes cost the router's exact table (src/broker/rtab.c; docs/benchmarks.md
 * "The link thread's share at 53 nodes").
 *
 *   cc -O2 -D_GNU_SOURCE -Isrc/broker -Isrc/core -Isrc bench/rtab_drops.c \
 *      src/broker/rtab.c src/core/util.c -lcrypto -o /tmp/rtab_drops
 *   /tmp/rtab_drops [PEERS] [PER_PEER] [RUNS]     (default 52 1000 7)
 *
 * Each of PEERS peers has PER_PEER pairs in the table (as while its routes
 * are under cluster.route_bloom_above), then every peer is dropped in turn
 * without a callback (its bits replace them, router_node_bits_set); prints
 * the best of RUNS for the drops alone.  Build it against another tree's
 * rtab.c to compare.  A bench tool: no state beyond main's.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rtab.h"
#include "util.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int peers = argc > 1 ? atoi(argv[1]) : 52;
    int per = argc > 2 ? atoi(argv[2]) : 1000;
    int runs = argc > 3 ? atoi(argv[3]) : 7;
    if (peers < 1 || peers > 65535 || per < 1 || runs < 1) {
        fprintf(stderr, "usage: rtab_drops [PEERS] [PER_PEER] [RUNS]\n");
        return 2;
    }
    double best = 1e9;
    for (int r = 0; r < runs; r++) {
        rtab_t *t = rtab_new();
        for (int k = 1; k <= peers; k++)
            for (int i = 0; i < per; i++)
                rtab_add(t, an_hash64((uint64_t)k * 10000000u + (uint64_t)i), (uint16_t)k);
        double a = now_s();
        for (int k = 1; k <= peers; k++)
            rtab_drop_node(t, (uint16_t)k, NULL, NULL);
        double b = now_s();
        if (b - a < best)
            best = b - a;
        rtab_free(t);
    }
    printf("%d drops of %d pairs from %d: %.2f ms (best of %d)\n", peers, per, peers * per,
           best * 1e3, runs);
    return 0;
}
