/* fuzz_topic.c -- libFuzzer: topic_matches() against trie_match() on a
 * one-entry trie.  Input is FILTER '\0' TOPIC (no '\0': the topic is empty
 * and the filter is also matched against itself).  Filters failing the
 * local well-formedness check (non-empty, '+' and '#' whole levels, '#'
 * last: the trie's precondition) are skipped; topics are taken as they
 * are.  Any disagreement, or a trie not back to its root after the
 * remove, aborts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trie.h"

static int filter_ok(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '+' && p[i] != '#')
            continue;
        if (i > 0 && p[i - 1] != '/')
            return 0;
        if (i + 1 < n && p[i + 1] != '/')
            return 0;
        if (p[i] == '#' && i + 1 != n)
            return 0;
    }
    return 1;
}

static void count_cb(void *ud, const sub_ref_t *s)
{
    if (s->sid != 42 || s->owner != 3 || s->opts != 1)
        abort();
    (*(int *)ud)++;
}

static void check(trie_t *t, const uint8_t *f, size_t flen, const uint8_t *tp, size_t tlen)
{
    int hits = 0;
    trie_match(t, tp, tlen, count_cb, &hits);
    if (hits != topic_matches(f, flen, tp, tlen))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t flen = nul ? (size_t)(nul - data) : size;
    const uint8_t *topic = nul ? nul + 1 : data + size;
    size_t tlen = nul ? size - flen - 1 : 0;
    sub_ref_t sub = {.sid = 42, .owner = 3, .opts = 1};
    trie_t *t;

    if (!filter_ok(data, flen) || !(t = trie_new()))
        return 0;
    if (trie_insert(t, data, flen, &sub) != 1 || trie_insert(t, data, flen, &sub) != 0 ||
        trie_count(t) != 1)
        abort();
    check(t, data, flen, topic, tlen);
    if (!nul)
        check(t, data, flen, data, flen); /* a filter as a topic */
    if (trie_remove(t, data, flen, 42) != 1 || trie_count(t) != 0 || trie_nodes(t) != 1)
        abort();
    trie_free(t);
    return 0;
}
