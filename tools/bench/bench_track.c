/* bench_track.c -- message accounting: loss, duplicates, reordering; topic
 * templates and matching.
 *
 * Every benchmark payload of 16 bytes or more starts with a header written by
 * the publisher: 8-byte send time (CLOCK_MONOTONIC ns), 4-byte publisher
 * index, 4-byte sequence number (host byte order: sender and receiver are on
 * the same machine).  A subscriber keeps, per publisher it hears from, the
 * highest sequence number seen and a 64-bit window of the ones just below it
 * (a small open-addressing table per subscriber, so 1,000 -> 1 fan-in and
 * 100 -> 100 point-to-point cost the same per message).  From that window a
 * message is new, a duplicate, or a reordered arrival filling a gap; anything
 * older than the window is counted as "late" (cannot tell).
 *
 * Loss is not guessed from sequence gaps in pubsub mode: the parent knows
 * how many messages each publisher sent and which subscribers' filters match
 * its topic (topic_matches), so expected deliveries - distinct deliveries is
 * exact even for a subscriber that never received anything.  In sub mode
 * (publishers elsewhere) only in-stream gaps can be counted.
 */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "util.h"

/* ---- per-subscriber pair table -------------------------------------------- */

static uint32_t pair_hash(uint32_t key)
{
    return (uint32_t)an_hash64(key);
}

static void pairs_grow(bench_pairs_t *t)
{
    uint32_t ncap = t->cap ? t->cap * 2 : 8;
    bench_pair_t *ns = an_calloc(ncap, sizeof(*ns));
    for (uint32_t i = 0; i < t->cap; i++) {
        bench_pair_t *e = &t->slots[i];
        if (!e->pub)
            continue;
        uint32_t h = pair_hash(e->pub) & (ncap - 1);
        while (ns[h].pub)
            h = (h + 1) & (ncap - 1);
        ns[h] = *e;
    }
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    t->last = 0;
}

static bench_pair_t *pairs_get(bench_pairs_t *t, uint32_t pub, int *isnew)
{
    uint32_t key = pub + 1;
    *isnew = 0;
    if (t->cap && t->slots[t->last].pub == key)
        return &t->slots[t->last];
    if ((t->n + 1) * 2 > t->cap)
        pairs_grow(t);
    uint32_t h = pair_hash(key) & (t->cap - 1);
    while (t->slots[h].pub && t->slots[h].pub != key)
        h = (h + 1) & (t->cap - 1);
    if (!t->slots[h].pub) {
        t->slots[h].pub = key;
        t->n++;
        *isnew = 1;
    }
    t->last = h;
    return &t->slots[h];
}

void track_record(bench_pairs_t *t, uint32_t pub, uint32_t seq, bench_stats_t *st)
{
    int isnew;
    bench_pair_t *e = pairs_get(t, pub, &isnew);
    st->c[C_tracked]++;
    if (isnew) {
        e->next = seq + 1;
        e->win = 1;
        e->count = 1;
        st->c[C_distinct]++;
        return;
    }
    if (seq >= e->next) {
        uint32_t skipped = seq - e->next;
        uint64_t shift = (uint64_t)skipped + 1;
        st->c[C_gaps] += skipped;
        e->win = shift >= 64 ? 0 : e->win << shift;
        e->win |= 1;
        e->next = seq + 1;
        e->count++;
        st->c[C_distinct]++;
        return;
    }
    uint32_t back = e->next - 1 - seq;
    if (back >= 64) {
        st->c[C_late]++;
        return;
    }
    uint64_t bit = 1ull << back;
    if (e->win & bit) {
        st->c[C_dup]++;
        return;
    }
    e->win |= bit;
    e->count++;
    st->c[C_distinct]++;
    st->c[C_reordered]++;
    if (st->c[C_gaps])
        st->c[C_gaps]--;
}

void track_free(bench_pairs_t *t)
{
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

/* ---- templates --------------------------------------------------------------- */

void client_id_for(int role, uint32_t idx, char *out, size_t size)
{
    static const char tag[] = {'c', 'p', 's'};
    snprintf(out, size, "%s%c%u", g_opt.prefix, tag[role], idx);
}

int tmpl_expand(const char *tmpl, uint32_t idx, const char *client_id, const uint64_t *n, char *out,
                size_t size)
{
    size_t o = 0;
    for (const char *p = tmpl; *p; p++) {
        char num[32];
        const char *ins = NULL;
        if (p[0] == '%' && p[1]) {
            switch (p[1]) {
            case 'i':
                snprintf(num, sizeof(num), "%u", idx);
                ins = num;
                break;
            case 'c':
                ins = client_id;
                break;
            case 'n':
                if (n) {
                    snprintf(num, sizeof(num), "%llu", (unsigned long long)*n);
                    ins = num;
                }
                break;
            case '%':
                ins = "%";
                break;
            default:
                break;
            }
        }
        if (ins) {
            size_t l = strlen(ins);
            if (o + l >= size)
                return -1;
            memcpy(out + o, ins, l);
            o += l;
            p++;
            continue;
        }
        if (o + 1 >= size)
            return -1;
        out[o++] = *p;
    }
    out[o] = '\0';
    return (int)o;
}

/* ---- matching ------------------------------------------------------------------ */

int topic_matches(const char *f, size_t fl, const char *t, size_t tl)
{
    size_t i = 0, j = 0;
    /* [MQTT-4.7.2-1] wildcards at the first level do not match $ topics */
    if (tl && t[0] == '$' && fl && (f[0] == '+' || f[0] == '#'))
        return 0;
    while (i < fl) {
        if (f[i] == '#')
            return 1;
        if (f[i] == '+') {
            while (j < tl && t[j] != '/')
                j++;
            i++;
        } else {
            while (i < fl && f[i] != '/') {
                if (j >= tl || t[j] != f[i])
                    return 0;
                i++;
                j++;
            }
            if (j < tl && t[j] != '/')
                return 0;
        }
        if (i == fl)
            return j == tl;
        /* f[i] == '/' */
        if (j == tl)
            return fl - i == 2 && f[i + 1] == '#'; /* "a/#" matches "a" */
        i++;
        j++;
    }
    return j == tl;
}

typedef struct {
    char *s;
    uint32_t len;
    uint32_t pub;
} topic_ent_t;

static int ent_cmp(const void *a, const void *b)
{
    const topic_ent_t *x = a, *y = b;
    size_t l = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, l);
    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

int64_t track_expected(const uint64_t *sent, uint32_t npub, uint32_t nsub)
{
    if (g_opt.topic.has_n)
        return -1;
    char cid[128], buf[1024];
    topic_ent_t *ents = an_calloc(npub ? npub : 1, sizeof(*ents));
    for (uint32_t p = 0; p < npub; p++) {
        client_id_for(ROLE_PUB, p, cid, sizeof(cid));
        int l = tmpl_expand(g_opt.topic.text, p, cid, NULL, buf, sizeof(buf));
        if (l < 0)
            l = 0;
        ents[p].s = an_strndup(buf, (size_t)l);
        ents[p].len = (uint32_t)l;
        ents[p].pub = p;
    }
    qsort(ents, npub, sizeof(*ents), ent_cmp);
    int64_t expected = 0;
    uint64_t wildcard_work = 0;
    for (uint32_t s = 0; s < nsub && expected >= 0; s++) {
        client_id_for(ROLE_SUB, s, cid, sizeof(cid));
        int l = tmpl_expand(g_opt.sub_topic.text, s, cid, NULL, buf, sizeof(buf));
        if (l < 0)
            continue;
        if (strpbrk(buf, "+#") == NULL) {
            /* exact filter: binary search for the first equal topic */
            topic_ent_t key = {.s = buf, .len = (uint32_t)l};
            size_t lo = 0, hi = npub;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (ent_cmp(&ents[mid], &key) < 0)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (size_t k = lo; k < npub && ent_cmp(&ents[k], &key) == 0; k++)
                expected += (int64_t)sent[ents[k].pub];
            continue;
        }
        wildcard_work += npub;
        if (wildcard_work > 400000000ull) {
            expected = -1; /* too many pairs to match: report gaps only */
            break;
        }
        for (uint32_t k = 0; k < npub; k++)
            if (topic_matches(buf, (size_t)l, ents[k].s, ents[k].len))
                expected += (int64_t)sent[ents[k].pub];
    }
    for (uint32_t p = 0; p < npub; p++)
        free(ents[p].s);
    free(ents);
    return expected;
}
