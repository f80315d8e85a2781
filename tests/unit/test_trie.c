/* test_trie.c -- the topic trie and topic_matches(): the MQTT spec's
 * matching examples ($SYS, '#' alone, '+' alone, empty levels), insert
 * replace semantics, remove and pruning (an empty trie has 1 node: the
 * root), overlapping filters reported once per (filter, subscriber), a
 * randomized comparison of trie_match, topic_matches and a naive reference
 * over 2,000 random filters x 2,000 random topics, deep topics, wide nodes,
 * crowded filters, and a 100k-subscription scale run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "trie.h"

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- helpers ---- */

typedef struct {
    sub_ref_t *v;
    size_t n, cap;
} hits_t;

static void hit_cb(void *ud, const sub_ref_t *s)
{
    hits_t *h = ud;
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->v = realloc(h->v, h->cap * sizeof(*h->v));
        assert_non_null(h->v);
    }
    h->v[h->n++] = *s;
}

static void count_cb(void *ud, const sub_ref_t *s)
{
    (void)s;
    (*(size_t *)ud)++;
}

static int cmp_sub(const void *a, const void *b)
{
    const sub_ref_t *x = a, *y = b;
    if (x->sid != y->sid)
        return x->sid < y->sid ? -1 : 1;
    if (x->opts != y->opts)
        return x->opts < y->opts ? -1 : 1;
    return 0;
}

/* Match and return the hits sorted by sid. */
static void match_sorted(const trie_t *t, const char *topic, hits_t *h)
{
    h->n = 0;
    trie_match(t, (const uint8_t *)topic, strlen(topic), hit_cb, h);
    if (h->n > 1)
        qsort(h->v, h->n, sizeof(*h->v), cmp_sub);
}

static int ins(trie_t *t, const char *f, uint64_t sid, uint16_t owner, uint8_t opts)
{
    sub_ref_t s = {.sid = sid, .owner = owner, .opts = opts};
    return trie_insert(t, (const uint8_t *)f, strlen(f), &s);
}

static int rem(trie_t *t, const char *f, uint64_t sid)
{
    return trie_remove(t, (const uint8_t *)f, strlen(f), sid);
}

static int tm(const char *f, const char *topic)
{
    return topic_matches((const uint8_t *)f, strlen(f), (const uint8_t *)topic, strlen(topic));
}

/* Naive reference on split levels: '+' one level, '#' the rest (zero or
 * more levels), a leading wildcard never matches a '$' topic. */
static int ref_levels(const char **f, size_t nf, const char **t, size_t nt)
{
    if (nf == 0)
        return nt == 0;
    if (strcmp(f[0], "#") == 0)
        return nf == 1;
    if (nt == 0)
        return 0;
    if (strcmp(f[0], "+") != 0 && strcmp(f[0], t[0]) != 0)
        return 0;
    return ref_levels(f + 1, nf - 1, t + 1, nt - 1);
}

static int ref_match(const char **f, size_t nf, const char **t, size_t nt)
{
    if (nt > 0 && t[0][0] == '$' && nf > 0 && (!strcmp(f[0], "+") || !strcmp(f[0], "#")))
        return 0;
    return ref_levels(f, nf, t, nt);
}

/* ---- the spec's examples ---- */

static const struct {
    const char *filter, *topic;
    int match;
} cases[] = {
    /* 4.7.1.2 multi-level wildcard */
    {"sport/tennis/player1/#", "sport/tennis/player1", 1},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", 1},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", 1},
    {"sport/tennis/player1/#", "sport/tennis/player2", 0},
    {"sport/tennis/player1/#", "sport/tennis", 0},
    {"sport/#", "sport", 1},
    {"sport/#", "sport/", 1},
    {"sport/#", "sports", 0},
    {"sport/tennis/#", "sport/tennis/player1", 1},
    {"#", "sport", 1},
    {"#", "sport/tennis/player1", 1},
    {"#", "/", 1},
    {"#", "/finance", 1},
    /* 4.7.1.3 single-level wildcard */
    {"sport/tennis/+", "sport/tennis/player1", 1},
    {"sport/tennis/+", "sport/tennis/player2", 1},
    {"sport/tennis/+", "sport/tennis/player1/ranking", 0},
    {"sport/+", "sport", 0},
    {"sport/+", "sport/", 1},
    {"+/tennis/#", "sport/tennis/player1", 1},
    {"+/tennis/#", "sport/tennis", 1},
    {"sport/+/player1", "sport/tennis/player1", 1},
    {"sport/+/player1", "sport/tennis/player2", 0},
    {"+/+", "/finance", 1},
    {"/+", "/finance", 1},
    {"+", "/finance", 0},
    {"+", "sport", 1},
    {"+", "sport/tennis", 0},
    {"+", "/", 0},
    {"+/+", "/", 1},
    {"+/+", "a", 0},
    {"a/+/c", "a/b/c", 1},
    {"a/+/c", "a//c", 1},
    {"a/+/c", "a/c", 0},
    {"a/+/c", "a/b/c/d", 0},
    {"a/+/c", "a/b", 0},
    {"a/+/c", "x/b/c", 0},
    /* 4.7.2 topics beginning with $ */
    {"#", "$SYS/monitor/Clients", 0},
    {"#", "$SYS", 0},
    {"+/monitor/Clients", "$SYS/monitor/Clients", 0},
    {"+", "$SYS", 0},
    {"+/#", "$SYS/x", 0},
    {"$SYS/#", "$SYS/monitor/Clients", 1},
    {"$SYS/#", "$SYS", 1},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", 1},
    {"$SYS/+/Clients", "$SYS/monitor/Clients", 1},
    {"$SYS", "$SYS", 1},
    {"a/+", "a/$b", 1},
    {"a/#", "a/$b/c", 1},
    {"+/$b", "a/$b", 1},
    /* empty levels are levels */
    {"a//b", "a//b", 1},
    {"a//b", "a/b", 0},
    {"a/b", "a//b", 0},
    {"/a", "/a", 1},
    {"/a", "a", 0},
    {"a", "/a", 0},
    {"+/a", "/a", 1},
    {"/", "/", 1},
    {"//", "//", 1},
    {"+/+/+", "//", 1},
    {"+/+", "//", 0},
    {"/#", "/", 1},
    {"/#", "/a/b", 1},
    {"/#", "a", 0},
    {"a/", "a/", 1},
    {"a/", "a", 0},
    {"a/#", "a", 1},
    {"a/#", "a/", 1},
    {"a/#", "ab", 0},
    {"a/b/#", "a/b", 1},
    {"a/b/#", "a/bc", 0},
    {"a/b/#", "a", 0},
    /* literal compare, case sensitive */
    {"Sport", "sport", 0},
    {"sport", "sport", 1},
    {"sport/tennis", "sport/tennis/", 0},
    {"ab", "a", 0},
    {"a", "ab", 0},
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void test_spec_examples(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    hits_t h = {0};
    assert_non_null(t);
    /* one subscriber per distinct filter; sid = index of its first case */
    for (size_t i = 0; i < NCASES; i++) {
        int dup = 0;
        for (size_t j = 0; j < i; j++)
            dup |= strcmp(cases[i].filter, cases[j].filter) == 0;
        if (!dup)
            assert_int_equal(ins(t, cases[i].filter, i, 0, 1), 1);
    }
    for (size_t i = 0; i < NCASES; i++) {
        if (tm(cases[i].filter, cases[i].topic) != cases[i].match)
            fail_msg("topic_matches(\"%s\", \"%s\") != %d", cases[i].filter, cases[i].topic,
                     cases[i].match);
        /* the trie must report the filter's subscriber iff it matches */
        size_t sid = 0;
        while (strcmp(cases[sid].filter, cases[i].filter) != 0)
            sid++;
        match_sorted(t, cases[i].topic, &h);
        size_t seen = 0;
        for (size_t k = 0; k < h.n; k++)
            seen += h.v[k].sid == sid;
        if (seen != (size_t)cases[i].match)
            fail_msg("trie: filter \"%s\" topic \"%s\": reported %zu times, want %d",
                     cases[i].filter, cases[i].topic, seen, cases[i].match);
    }
    /* and every filter of the table against every topic of the table */
    for (size_t i = 0; i < NCASES; i++) {
        match_sorted(t, cases[i].topic, &h);
        for (size_t k = 0; k < h.n; k++)
            assert_true(tm(cases[h.v[k].sid].filter, cases[i].topic));
        size_t want = 0;
        for (size_t j = 0; j < NCASES; j++) {
            int first = 1;
            for (size_t k = 0; k < j; k++)
                first &= strcmp(cases[j].filter, cases[k].filter) != 0;
            want += first && tm(cases[j].filter, cases[i].topic);
        }
        assert_int_equal(h.n, want);
    }
    free(h.v);
    trie_free(t);
}

/* '#' alone and '+' alone, a topic of one empty level, '$' filters */
static void test_wildcards_alone(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    hits_t h = {0};
    assert_int_equal(ins(t, "#", 1, 0, 0), 1);
    assert_int_equal(ins(t, "+", 2, 0, 0), 1);
    assert_int_equal(ins(t, "$SYS/#", 3, 0, 0), 1);
    match_sorted(t, "x", &h);
    assert_int_equal(h.n, 2);
    assert_int_equal(h.v[0].sid, 1);
    assert_int_equal(h.v[1].sid, 2);
    match_sorted(t, "x/y/z", &h);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.v[0].sid, 1);
    match_sorted(t, "$SYS/broker/uptime", &h);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.v[0].sid, 3);
    match_sorted(t, "$other", &h);
    assert_int_equal(h.n, 0);
    /* a zero-length topic is one empty level (never valid on the wire) */
    h.n = 0;
    trie_match(t, (const uint8_t *)"", 0, hit_cb, &h);
    assert_int_equal(h.n, 2);
    assert_true(topic_matches((const uint8_t *)"+", 1, (const uint8_t *)"", 0));
    assert_true(topic_matches((const uint8_t *)"#", 1, (const uint8_t *)"", 0));
    /* not NUL terminated: only len bytes count */
    assert_true(topic_matches((const uint8_t *)"a/bXYZ", 3, (const uint8_t *)"a/bQQ", 3));
    free(h.v);
    trie_free(t);
}

/* ---- insert / replace ---- */

static void test_insert_replace(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    hits_t h = {0};
    assert_int_equal(trie_count(t), 0);
    assert_int_equal(trie_nodes(t), 1);
    assert_int_equal(ins(t, "a/b", 7, 2, 1), 1);
    assert_int_equal(ins(t, "a/b", 7, 3, 2), 0); /* same sid, same filter */
    assert_int_equal(trie_count(t), 1);
    match_sorted(t, "a/b", &h);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.v[0].sid, 7);
    assert_int_equal(h.v[0].owner, 3);
    assert_int_equal(h.v[0].opts, 2);
    assert_int_equal(ins(t, "a/b", 8, 1, 0), 1);
    assert_int_equal(ins(t, "a/+", 7, 3, 0), 1); /* same sid, other filter */
    assert_int_equal(trie_count(t), 3);
    assert_int_equal(ins(t, "a/b", 8, 9, 1), 0);
    assert_int_equal(ins(t, "a/b", 7, 4, 0), 0);
    match_sorted(t, "a/b", &h);
    assert_int_equal(h.n, 3);
    assert_int_equal(trie_count(t), 3);

    /* many subscribers on one filter: replace works at every size, with
     * and without the sid index */
    for (uint64_t n = 1; n <= 300; n++) {
        assert_int_equal(ins(t, "crowd/#", 1000 + n, (uint16_t)n, 0), 1);
        uint64_t r = 1001 + (n * 7919 + 13) % n; /* one already there */
        assert_int_equal(ins(t, "crowd/#", r, (uint16_t)(n + 5), 1), 0);
    }
    assert_int_equal(trie_count(t), 303);
    match_sorted(t, "crowd/x", &h);
    assert_int_equal(h.n, 300);
    for (size_t i = 0; i < h.n; i++)
        assert_int_equal(h.v[i].sid, 1001 + i);
    free(h.v);
    trie_free(t);
}

/* Subscribers of one filter coming and going around the sizes where the
 * representation changes (inline one, array, array + sid index). */
static void test_crowd_churn(void **state)
{
    (void)state;
    enum { NSID = 80 };
    trie_t *t = trie_new();
    uint8_t in[NSID] = {0}, opts[NSID] = {0};
    size_t n = 0;
    uint64_t seed = 99;
    hits_t h = {0};
    assert_non_null(t);
    for (int it = 0; it < 200000; it++) {
        /* drift the target size slowly over 0..NSID */
        size_t target = (size_t)((it / 2000) * 37 % (NSID + 1));
        uint64_t sid = rng_next(&seed) % NSID;
        int add = n < target ? rng_next(&seed) % 4 != 0 : rng_next(&seed) % 4 == 0;
        if (add) {
            uint8_t o = (uint8_t)(rng_next(&seed) % 3);
            assert_int_equal(ins(t, "c/h/u/r/n", sid, (uint16_t)sid, o), !in[sid]);
            n += !in[sid];
            in[sid] = 1;
            opts[sid] = o;
        } else {
            assert_int_equal(rem(t, "c/h/u/r/n", sid), in[sid]);
            n -= in[sid];
            in[sid] = 0;
        }
        assert_int_equal(trie_count(t), n);
        if (it % 64 == 0) {
            match_sorted(t, "c/h/u/r/n", &h);
            assert_int_equal(h.n, n);
            for (size_t i = 0, k = 0; i < NSID; i++) {
                if (!in[i])
                    continue;
                assert_int_equal(h.v[k].sid, i);
                assert_int_equal(h.v[k].opts, opts[i]);
                k++;
            }
            assert_int_equal(trie_nodes(t), n ? 2 : 1); /* one node: an exact filter */
        }
    }
    free(h.v);
    trie_free(t);
}

/* ---- remove / prune ---- */

static void test_remove_prune(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    hits_t h = {0};
    assert_int_equal(trie_nodes(t), 1);
    assert_int_equal(rem(t, "a", 1), 0);
    assert_int_equal(ins(t, "a/b/c", 1, 0, 0), 1);
    assert_int_equal(trie_nodes(t), 2); /* exact: one node for the whole filter */
    assert_int_equal(ins(t, "a/b/+", 2, 0, 0), 1);
    assert_int_equal(ins(t, "a/#", 3, 0, 0), 1);
    assert_int_equal(ins(t, "a/b/c", 4, 0, 0), 1);
    assert_int_equal(ins(t, "+/b/#", 5, 0, 0), 1);
    assert_int_equal(trie_nodes(t), 9);
    assert_int_equal(trie_count(t), 5);
    assert_int_equal(rem(t, "a/b/c", 99), 0); /* not subscribed */
    assert_int_equal(rem(t, "a/b/d", 1), 0);  /* no such filter */
    assert_int_equal(rem(t, "a/b", 1), 0);    /* interior node */
    assert_int_equal(rem(t, "a/+/c", 1), 0);
    assert_int_equal(rem(t, "a/b/c", 1), 1);
    assert_int_equal(rem(t, "a/b/c", 1), 0);
    assert_int_equal(trie_nodes(t), 9); /* sid 4 keeps a/b/c */
    match_sorted(t, "a/b/c", &h);
    assert_int_equal(h.n, 4);
    assert_int_equal(rem(t, "a/b/c", 4), 1);
    assert_int_equal(trie_nodes(t), 8);
    assert_int_equal(rem(t, "a/#", 3), 1);
    assert_int_equal(trie_nodes(t), 7);
    assert_int_equal(rem(t, "a/b/+", 2), 1);
    assert_int_equal(trie_nodes(t), 4); /* a, b, + pruned; +/b/# left */
    match_sorted(t, "a/b/c", &h);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.v[0].sid, 5);
    assert_int_equal(rem(t, "+/b/#", 5), 1);
    assert_int_equal(trie_nodes(t), 1);
    assert_int_equal(trie_count(t), 0);
    match_sorted(t, "a/b/c", &h);
    assert_int_equal(h.n, 0);

    /* a wide node grows its table, then shrinks back to nothing (filters
     * with a wildcard: exact ones would go to the exact hub) */
    char f[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(f, sizeof(f), "w/%d/+", i);
        assert_int_equal(ins(t, f, (uint64_t)i, 0, 0), 1);
    }
    assert_int_equal(trie_nodes(t), 2 + 2 * 3000);
    for (int i = 0; i < 3000; i++) {
        snprintf(f, sizeof(f), "w/%d/x", i);
        match_sorted(t, f, &h);
        assert_int_equal(h.n, 1);
        assert_int_equal(h.v[0].sid, (uint64_t)i);
    }
    uint64_t seed = 11;
    int *order = malloc(3000 * sizeof(*order));
    assert_non_null(order);
    for (int i = 0; i < 3000; i++)
        order[i] = i;
    for (int i = 2999; i > 0; i--) {
        int j = (int)(rng_next(&seed) % (uint64_t)(i + 1)), x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    for (int k = 0; k < 3000; k++) {
        snprintf(f, sizeof(f), "w/%d/+", order[k]);
        assert_int_equal(rem(t, f, (uint64_t)order[k]), 1);
        if (k % 97 == 0) { /* the rest still there, the removed gone */
            for (int m = 0; m < 3000; m += 13) {
                snprintf(f, sizeof(f), "w/%d/x", order[m]);
                match_sorted(t, f, &h);
                assert_int_equal(h.n, m > k ? 1 : 0);
            }
        }
    }
    assert_int_equal(trie_nodes(t), 1);
    assert_int_equal(trie_count(t), 0);
    free(order);
    free(h.v);
    trie_free(t);
}

/* ---- overlapping filters ---- */

static void test_overlapping(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    hits_t h = {0};
    static const char *filters[] = {"a/b", "a/+", "a/#", "#", "+/b", "+/+", "+/#", "a/b/#"};
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(ins(t, filters[i], 1, 0, (uint8_t)i), 1); /* one session */
        assert_int_equal(ins(t, filters[i], 2, 1, (uint8_t)i), 1); /* and another */
    }
    match_sorted(t, "a/b", &h);
    assert_int_equal(h.n, 16); /* once per (filter, subscriber) */
    for (size_t i = 0; i < 16; i++) {
        assert_int_equal(h.v[i].sid, 1 + i / 8);
        assert_int_equal(h.v[i].opts, i % 8);
    }
    match_sorted(t, "a", &h);
    assert_int_equal(h.n, 6); /* a/#, #, +/# for each */
    match_sorted(t, "a/c", &h);
    assert_int_equal(h.n, 10); /* a/+, a/#, #, +/+, +/# */
    free(h.v);
    trie_free(t);
}

/* ---- randomized: trie vs topic_matches vs the naive reference ---- */

static const char *alphabet[] = {"a", "b", "c", "", "ab", "$x", "bb", "$SYS"};
#define NALPHA (sizeof(alphabet) / sizeof(alphabet[0]))

typedef struct {
    const char *lv[8];
    size_t n;
    char s[64];
} levels_t;

static void join(levels_t *l)
{
    size_t p = 0;
    for (size_t i = 0; i < l->n; i++) {
        size_t k = strlen(l->lv[i]);
        if (i)
            l->s[p++] = '/';
        memcpy(l->s + p, l->lv[i], k);
        p += k;
    }
    l->s[p] = 0;
}

static void rand_filter(uint64_t *seed, levels_t *f)
{
    f->n = 1 + rng_next(seed) % 5;
    for (size_t i = 0; i < f->n; i++) {
        uint64_t x = rng_next(seed) % 100;
        if (x < 10 && i == f->n - 1) {
            f->lv[i] = "#";
        } else if (x < 30) {
            f->lv[i] = "+";
        } else {
            /* '$' levels mostly first */
            do
                f->lv[i] = alphabet[rng_next(seed) % NALPHA];
            while (f->lv[i][0] == '$' && i > 0 && rng_next(seed) % 4);
        }
    }
    join(f);
}

static void rand_topic(uint64_t *seed, levels_t *tp)
{
    tp->n = 1 + rng_next(seed) % 6;
    for (size_t i = 0; i < tp->n; i++) {
        do
            tp->lv[i] = alphabet[rng_next(seed) % NALPHA];
        while (tp->lv[i][0] == '$' && i > 0 && rng_next(seed) % 4);
    }
    join(tp);
}

static void test_random_vs_brute(void **state)
{
    (void)state;
    enum { NF = 2000, NT = 2000 };
    levels_t *fs = calloc(NF, sizeof(*fs)), *ts = calloc(NT, sizeof(*ts));
    uint8_t *alive = calloc(NF, 1);
    hits_t h = {0};
    uint64_t seed = 0xC0FFEE;
    trie_t *t = trie_new();
    assert_true(fs && ts && alive && t);
    for (size_t i = 0; i < NF; i++) {
        rand_filter(&seed, &fs[i]);
        /* sid = i; the same filter may come up under several sids */
        assert_int_equal(ins(t, fs[i].s, i, (uint16_t)(i % 7), (uint8_t)(i % 3)), 1);
        alive[i] = 1;
    }
    for (size_t i = 0; i < NT; i++)
        rand_topic(&seed, &ts[i]);
    assert_int_equal(trie_count(t), NF);

    size_t total = 0;
    for (int round = 0; round < 3; round++) {
        for (size_t j = 0; j < NT; j++) {
            match_sorted(t, ts[j].s, &h);
            size_t k = 0;
            for (size_t i = 0; i < NF; i++) {
                int r = ref_match(fs[i].lv, fs[i].n, ts[j].lv, ts[j].n);
                if (tm(fs[i].s, ts[j].s) != r)
                    fail_msg("topic_matches(\"%s\", \"%s\") != %d", fs[i].s, ts[j].s, r);
                if (!r || !alive[i])
                    continue;
                if (k >= h.n || h.v[k].sid != i)
                    fail_msg("trie: topic \"%s\" misses filter \"%s\" (sid %zu)", ts[j].s, fs[i].s,
                             i);
                assert_int_equal(h.v[k].owner, i % 7);
                k++;
            }
            if (k != h.n)
                fail_msg("trie: topic \"%s\": %zu extra hits", ts[j].s, h.n - k);
            total += h.n;
        }
        /* remove about half, then (round 2) all */
        for (size_t i = 0; i < NF; i++) {
            if (alive[i] && (round == 1 || rng_next(&seed) % 2)) {
                assert_int_equal(rem(t, fs[i].s, i), 1);
                alive[i] = 0;
            }
        }
    }
    assert_true(total > 10000);
    assert_int_equal(trie_count(t), 0);
    assert_int_equal(trie_nodes(t), 1);
    print_message("random: %zu matching pairs checked\n", total);
    free(h.v);
    free(fs);
    free(ts);
    free(alive);
    trie_free(t);
}

/* ---- deep topics: no recursion, no stack ---- */

static void test_deep(void **state)
{
    (void)state;
    enum { DEPTH = 30000 };
    size_t len = 2 * DEPTH - 1;
    char *aa = malloc(len + 1), *pp = malloc(len + 1), *ah = malloc(len + 3);
    trie_t *t = trie_new();
    hits_t h = {0};
    assert_true(aa && pp && ah && t);
    for (size_t i = 0; i < DEPTH; i++) {
        aa[2 * i] = 'a';
        pp[2 * i] = '+';
        if (i + 1 < DEPTH)
            aa[2 * i + 1] = pp[2 * i + 1] = '/';
    }
    aa[len] = pp[len] = 0;
    memcpy(ah, aa, len);
    memcpy(ah + len, "/#", 3);
    assert_int_equal(ins(t, aa, 1, 0, 0), 1);
    assert_int_equal(ins(t, pp, 2, 0, 0), 1);
    assert_int_equal(ins(t, ah, 3, 0, 0), 1);
    assert_int_equal(ins(t, "a/+/a/#", 4, 0, 0), 1);
    match_sorted(t, aa, &h);
    assert_int_equal(h.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(h.v[i].sid, i + 1);
    assert_true(tm(pp, aa) && tm(ah, aa) && tm(aa, aa) && !tm(aa, pp));
    aa[len - 1] = 'b'; /* last level differs */
    match_sorted(t, aa, &h);
    assert_int_equal(h.n, 2); /* +/+/... and a/+/a/# */
    assert_int_equal(rem(t, pp, 2), 1);
    /* root, a.., # (of ah); +, a, # (of a/+/a/#); aa's own exact node */
    assert_int_equal(trie_nodes(t), 1 + DEPTH + 1 + 3 + 1);
    free(aa);
    free(pp);
    free(ah);
    free(h.v);
    trie_free(t); /* deep tree freed without recursion */
}

/* ---- scale ---- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_scale(void **state)
{
    (void)state;
    enum { N = 100000 };
    trie_t *t = trie_new();
    char f[96];
    double t0 = now_s();
    assert_non_null(t);
    /* typical device fleet: per-device filters, a few shared ones */
    for (int i = 0; i < N; i++) {
        snprintf(f, sizeof(f), "devices/dev%06d/cmd/#", i);
        assert_int_equal(ins(t, f, (uint64_t)i, (uint16_t)(i % 8), 1), 1);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(f, sizeof(f), "devices/+/status/%d", i % 10);
        assert_int_equal(ins(t, f, (uint64_t)(N + i), 0, 0), 1);
    }
    /* 10k sessions on one filter (the sid index path) */
    for (int i = 0; i < 10000; i++)
        assert_int_equal(ins(t, "broadcast/#", (uint64_t)(2 * N + i), 0, 0), 1);
    assert_int_equal(trie_count(t), N + 1000 + 10000);
    double t1 = now_s();

    size_t hits = 0;
    for (int i = 0; i < N; i++) {
        size_t c = 0;
        snprintf(f, sizeof(f), "devices/dev%06d/cmd/reboot", i);
        trie_match(t, (const uint8_t *)f, strlen(f), count_cb, &c);
        assert_int_equal(c, 1);
        hits += c;
    }
    for (int i = 0; i < 1000; i++) {
        size_t c = 0;
        snprintf(f, sizeof(f), "devices/dev%06d/status/%d", i, i % 10);
        trie_match(t, (const uint8_t *)f, strlen(f), count_cb, &c);
        assert_int_equal(c, 100);
    }
    size_t c = 0;
    trie_match(t, (const uint8_t *)"broadcast/all", 13, count_cb, &c);
    assert_int_equal(c, 10000);
    double t2 = now_s();

    /* remove everything in a scrambled order */
    for (int k = 0; k < N; k++) {
        int i = (int)(((uint64_t)k * 7919) % N);
        snprintf(f, sizeof(f), "devices/dev%06d/cmd/#", i);
        assert_int_equal(rem(t, f, (uint64_t)i), 1);
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(f, sizeof(f), "devices/+/status/%d", i % 10);
        assert_int_equal(rem(t, f, (uint64_t)(N + i)), 1);
    }
    for (int k = 0; k < 10000; k++) {
        int i = (int)(((uint64_t)k * 7919) % 10000);
        assert_int_equal(rem(t, "broadcast/#", (uint64_t)(2 * N + i)), 1);
        if (k == 5000) {
            c = 0;
            trie_match(t, (const uint8_t *)"broadcast", 9, count_cb, &c);
            assert_int_equal(c, 10000 - 5001);
        }
    }
    assert_int_equal(trie_count(t), 0);
    assert_int_equal(trie_nodes(t), 1);
    double t3 = now_s();
    print_message("scale: insert %.3fs, %zu+ matches %.3fs, remove %.3fs\n", t1 - t0, hits, t2 - t1,
                  t3 - t2);
    trie_free(t);
}

/* trie_set_local_hook: 0<->1 transitions of subscribers of kind LOCAL
 * only (not nodes, not consumers), and the first pass over what is there. */
typedef struct {
    char log[1024];
} hook_log_t;

static void hook_rec(void *ud, const uint8_t *f, size_t len, int up)
{
    hook_log_t *h = ud;
    size_t n = strlen(h->log);
    snprintf(h->log + n, sizeof(h->log) - n, "%c%.*s ", up ? '+' : '-', (int)len, (const char *)f);
}

static void test_local_hook(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    sub_ref_t l1 = {.sid = 1}, l2 = {.sid = 2};
    sub_ref_t node = {.sid = ROUTE_SID_NODE | 3, .owner = 3, .kind = ROUTE_OWNER_NODE};
    sub_ref_t cons = {.sid = ROUTE_SID_CONSUMER | 8, .kind = ROUTE_OWNER_CONSUMER};
    assert_int_equal(trie_insert(t, (const uint8_t *)"/a", 2, &l1), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"+/#", 3, &l1), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"x/y", 3, &node), 1);
    hook_log_t h = {{0}};
    trie_set_local_hook(t, hook_rec, &h);
    /* the first pass: the local filters, not the node's */
    assert_non_null(strstr(h.log, "+/a "));
    assert_non_null(strstr(h.log, "++/# "));
    assert_null(strstr(h.log, "x/y"));
    h.log[0] = '\0';
    assert_int_equal(trie_insert(t, (const uint8_t *)"x/y", 3, &cons), 1); /* not local */
    assert_int_equal(trie_insert(t, (const uint8_t *)"x/y", 3, &l1), 1);   /* first local */
    assert_int_equal(trie_insert(t, (const uint8_t *)"x/y", 3, &l2), 1);   /* second */
    assert_int_equal(trie_insert(t, (const uint8_t *)"x/y", 3, &l2), 0);   /* replaced */
    assert_int_equal(trie_remove(t, (const uint8_t *)"x/y", 3, l1.sid), 1);
    assert_int_equal(trie_remove(t, (const uint8_t *)"x/y", 3, node.sid), 1);
    assert_int_equal(trie_remove(t, (const uint8_t *)"x/y", 3, l2.sid), 1); /* last local */
    assert_int_equal(trie_remove(t, (const uint8_t *)"x/y", 3, cons.sid), 1);
    assert_int_equal(trie_remove(t, (const uint8_t *)"/a", 2, l1.sid), 1);
    assert_string_equal(h.log, "+x/y -x/y -/a ");
    trie_set_local_hook(t, NULL, NULL);
    assert_int_equal(trie_remove(t, (const uint8_t *)"+/#", 3, l1.sid), 1);
    assert_string_equal(h.log, "+x/y -x/y -/a ");
    trie_free(t);
}

/* trie_walk_exact_local: the exact filters with a local subscriber now
 * (not wildcards, not those only nodes, consumers or a shared group's
 * entry hold), whether a hook is set or not. */
static void test_walk_exact_local(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    sub_ref_t l1 = {.sid = 1}, l2 = {.sid = 2};
    sub_ref_t node = {.sid = ROUTE_SID_NODE | 3, .owner = 3, .kind = ROUTE_OWNER_NODE};
    sub_ref_t cons = {.sid = ROUTE_SID_CONSUMER | 8, .kind = ROUTE_OWNER_CONSUMER};
    sub_ref_t grp = {.sid = 9, .opts = SUB_SHARED};
    assert_int_equal(trie_insert(t, (const uint8_t *)"dev/1/in", 8, &l1), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"dev/2/in", 8, &node), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"dev/2/in", 8, &l2), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"dev/3/in", 8, &cons), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"dev/4/in", 8, &grp), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"dev/+/in", 8, &l1), 1);
    assert_int_equal(trie_insert(t, (const uint8_t *)"$SYS/x", 6, &l2), 1);
    hook_log_t h = {{0}};
    trie_walk_exact_local(t, hook_rec, &h);
    assert_int_equal(strlen(h.log), strlen("+dev/1/in +dev/2/in +$SYS/x "));
    assert_non_null(strstr(h.log, "+dev/1/in "));
    assert_non_null(strstr(h.log, "+dev/2/in "));
    assert_non_null(strstr(h.log, "+$SYS/x "));
    assert_int_equal(trie_remove(t, (const uint8_t *)"dev/2/in", 8, l2.sid), 1);
    assert_int_equal(trie_remove(t, (const uint8_t *)"dev/1/in", 8, l1.sid), 1);
    h.log[0] = '\0';
    trie_walk_exact_local(t, hook_rec, &h);
    assert_string_equal(h.log, "+$SYS/x ");
    trie_free(t);
}

/* Exact filters live as one node each under the exact hub: '$' topics,
 * the hub's table growing and shrinking, an exact and a wildcard filter
 * of one session both reported, and prefixes that are not the filter. */
static void test_exact(void **state)
{
    (void)state;
    trie_t *t = trie_new();
    hits_t h = {0};
    char f[32];
    assert_int_equal(ins(t, "$SYS/x", 1, 0, 0), 1);
    assert_int_equal(ins(t, "#", 2, 0, 0), 1);
    match_sorted(t, "$SYS/x", &h);
    assert_int_equal(h.n, 1); /* '#' does not match a '$' topic, the exact one does */
    assert_int_equal(h.v[0].sid, 1);
    assert_int_equal(ins(t, "d/1/in", 3, 0, 0), 1);
    assert_int_equal(ins(t, "d/+/in", 3, 0, 1), 1);
    match_sorted(t, "d/1/in", &h);
    assert_int_equal(h.n, 3); /* #, d/1/in and d/+/in: both of sid 3 */
    match_sorted(t, "d/1", &h);
    assert_int_equal(h.n, 1); /* only '#': an exact filter is not a prefix */
    match_sorted(t, "d/1/in/x", &h);
    assert_int_equal(h.n, 1);
    for (uint64_t i = 0; i < 5000; i++) {
        snprintf(f, sizeof(f), "dev/%llu/in", (unsigned long long)i);
        assert_int_equal(ins(t, f, 100 + i, 0, 0), 1);
    }
    assert_int_equal(trie_nodes(t), 1 + 1 + 3 + 2 + 5000); /* root, #, d/+/in, 2 exact, 5000 */
    for (uint64_t i = 0; i < 5000; i += 499) {
        snprintf(f, sizeof(f), "dev/%llu/in", (unsigned long long)i);
        match_sorted(t, f, &h);
        assert_int_equal(h.n, 2); /* its own and '#' */
    }
    for (uint64_t i = 0; i < 5000; i++) {
        snprintf(f, sizeof(f), "dev/%llu/in", (unsigned long long)i);
        assert_int_equal(rem(t, f, 100 + i), 1);
        assert_int_equal(rem(t, f, 100 + i), 0);
    }
    assert_int_equal(rem(t, "d/1/in", 3), 1);
    assert_int_equal(rem(t, "d/+/in", 3), 1);
    assert_int_equal(rem(t, "$SYS/x", 1), 1);
    assert_int_equal(rem(t, "#", 2), 1);
    assert_int_equal(trie_nodes(t), 1);
    assert_int_equal(trie_count(t), 0);
    match_sorted(t, "dev/7/in", &h);
    assert_int_equal(h.n, 0);
    free(h.v);
    trie_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_wildcards_alone),
        cmocka_unit_test(test_insert_replace),
        cmocka_unit_test(test_crowd_churn),
        cmocka_unit_test(test_remove_prune),
        cmocka_unit_test(test_overlapping),
        cmocka_unit_test(test_random_vs_brute),
        cmocka_unit_test(test_deep),
        cmocka_unit_test(test_scale),
        cmocka_unit_test(test_local_hook),
        cmocka_unit_test(test_walk_exact_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
