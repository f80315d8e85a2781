/* fuzz_acl.c -- libFuzzer target for the ACL file parser and the rule
 * checks (src/auth/auth_acl.c).
 *
 * Input: the bytes of an ACL file.  It is loaded from a memfd by its
 * /proc/self/fd path (auth_acl_load) and, when it holds no NUL, parsed as
 * text (auth_acl_from_lines): both must agree (refused or not, the same
 * message, the same number of rules).  A refusal names "PATH:LINE: ".
 *
 * Then queries derived from the input: the identities are the names after
 * "user" and "client" (the first two of each, no identity, and a name
 * with '/' that never substitutes); the filters are the words of the
 * input that are valid MQTT filters (at most 12); from each filter, topic
 * names it matches (wildcards replaced by plain levels, by a user name,
 * %u and %c by the identity).  For each identity and action, contract
 * checks, any violation aborts:
 *   - a SUBSCRIBE filter's verdict is ALLOW, DENY, PARTIAL or none (-1); a
 *     topic's is allow, deny or none;
 *   - a topic name asked as a filter gets the verdict it gets as a topic;
 *   - ALLOW on a filter: every topic it matches is allowed; DENY: denied;
 *   - between two filters: covers implies intersects; a topic matched by
 *     the covered filter is matched by the covering one; filters that do
 *     not intersect match no topic in common.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "auth.h"
#include "auth_acl.h"
#include "mqtt_codec.h"
#include "trie.h"

#include "fuzz_check.h"

#define MAX_WORDS 64
#define MAX_FILTERS 12
#define WORD_MAX 200

static int fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fd = memfd_create("fuzz_acl", 0);
    CHECK(fd >= 0);
    return 0;
}

typedef struct {
    char w[MAX_WORDS][WORD_MAX + 1];
    size_t n;
} words_t;

static void split_words(const uint8_t *data, size_t size, words_t *ws)
{
    size_t i = 0;
    ws->n = 0;
    while (i < size && ws->n < MAX_WORDS) {
        while (i < size && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' ||
                            data[i] == '\n' || data[i] == '\0'))
            i++;
        size_t s = i;
        while (i < size && !(data[i] == ' ' || data[i] == '\t' || data[i] == '\r' ||
                             data[i] == '\n' || data[i] == '\0'))
            i++;
        if (i > s && i - s <= WORD_MAX) {
            memcpy(ws->w[ws->n], data + s, i - s);
            ws->w[ws->n][i - s] = '\0';
            ws->n++;
        }
    }
}

/* Topic `out` from filter f: '+' levels become `plus`, a '#' level `hash`
 * (NULL: the "/#" is dropped), %u and %c the identity when given. */
static int derive(const char *f, const char *plus, const char *hash, const char *user,
                  const char *cid, char *out, size_t cap)
{
    size_t o = 0, n = strlen(f);
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        int lvl_start = i == 0 || f[i - 1] == '/';
        int lvl_end = i + 1 == n || f[i + 1] == '/';
        if (f[i] == '+' && lvl_start && lvl_end)
            rep = plus;
        else if (f[i] == '#' && lvl_start && lvl_end) {
            if (hash == NULL) {
                if (o > 0)
                    o--; /* the '/' before it */
                continue;
            }
            rep = hash;
        } else if (f[i] == '%' && i + 1 < n && (f[i + 1] == 'u' || f[i + 1] == 'c')) {
            rep = f[i + 1] == 'u' ? user : cid;
            if (rep == NULL)
                rep = "%";
            else
                i++;
        }
        if (rep == NULL) {
            if (o + 1 >= cap)
                return -1;
            out[o++] = f[i];
            continue;
        }
        size_t rl = strlen(rep);
        if (o + rl >= cap)
            return -1;
        memcpy(out + o, rep, rl);
        o += rl;
    }
    out[o] = '\0';
    return (int)o;
}

static int tmatch(const char *f, const char *t)
{
    return topic_matches((const uint8_t *)f, strlen(f), (const uint8_t *)t, strlen(t));
}

static void query(const auth_acl_t *a, const char *user, const char *cid, uint8_t action,
                  const char *const *filters, size_t nf)
{
    char topic[4 * WORD_MAX];
    for (size_t i = 0; i < nf; i++) {
        const char *f = filters[i];
        size_t fl = strlen(f);
        int v = auth_acl_check(a, user, cid, action, f, fl, 1);
        CHECK(v >= -1 && v <= AUTH_ACL_PARTIAL);
        const char *plus[] = {"x", user ? user : "y", "x", "$x"};
        const char *hash[] = {"x/y", NULL, "z", "x"};
        for (size_t k = 0; k < 4; k++) {
            int tl = derive(f, plus[k], hash[k], k == 2 ? user : NULL, k == 2 ? cid : NULL, topic,
                            sizeof(topic));
            if (tl <= 0 || !mqtt_topic_name_valid((const uint8_t *)topic, (size_t)tl) ||
                !tmatch(f, topic))
                continue;
            int d = auth_acl_check(a, user, cid, action, topic, (size_t)tl, 0);
            CHECK(d >= -1 && d <= 1);
            int df = auth_acl_check(a, user, cid, action, topic, (size_t)tl, 1);
            if (df != d) {
                fprintf(stderr,
                        "topic '%s' (user %s, client %s, action %u): %d as a topic, "
                        "%d as a filter\n",
                        topic, user ? user : "-", cid ? cid : "-", action, d, df);
                CHECK(df == d);
            }
            if (v == AUTH_ACL_ALLOW || v == AUTH_ACL_DENY) {
                if (d != v)
                    fprintf(stderr, "filter '%s' is %d, its topic '%s' is %d\n", f, v, topic, d);
                CHECK(d == v);
            }
            for (size_t j = 0; j < nf; j++) {
                const char *g = filters[j];
                size_t gl = strlen(g);
                int cov = auth_filter_covers(g, gl, f, fl);
                int in = auth_filter_intersects(g, gl, f, fl);
                if (cov && !in)
                    fprintf(stderr, "'%s' covers '%s' but does not intersect it\n", g, f);
                CHECK(!cov || in);
                int m = tmatch(g, topic);
                if (cov && !m)
                    fprintf(stderr, "'%s' covers '%s' but does not match '%s'\n", g, f, topic);
                CHECK(!cov || m);
                if (!in && m)
                    fprintf(stderr, "'%s' and '%s' do not intersect but both match '%s'\n", g, f,
                            topic);
                CHECK(in || !m);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[256], err2[256];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);

    err[0] = '\0';
    auth_acl_t *a = auth_acl_load(path, err, sizeof(err));
    if (a == NULL) {
        size_t pl = strlen(path);
        CHECK(strncmp(err, path, pl) == 0 && err[pl] == ':' && err[pl + 1] >= '1' &&
              err[pl + 1] <= '9');
    }
    if (memchr(data, '\0', size) == NULL) {
        char *text = malloc(size + 1);
        CHECK(text != NULL);
        memcpy(text, data, size);
        text[size] = '\0';
        err2[0] = '\0';
        auth_acl_t *b = auth_acl_from_lines(text, path, err2, sizeof(err2));
        CHECK((a == NULL) == (b == NULL));
        if (a == NULL)
            CHECK(strcmp(err, err2) == 0);
        else
            CHECK(auth_acl_count(a) == auth_acl_count(b));
        auth_acl_free(b);
        free(text);
    }
    if (a == NULL)
        return 0;

    words_t *ws = malloc(sizeof(*ws));
    CHECK(ws != NULL);
    split_words(data, size, ws);
    const char *users[2] = {NULL, NULL}, *cids[2] = {NULL, NULL};
    const char *filters[MAX_FILTERS];
    size_t nu = 0, nc = 0, nf = 0;
    for (size_t i = 0; i < ws->n; i++) {
        const char *w = ws->w[i];
        if (i + 1 < ws->n && strcmp(w, "user") == 0 && nu < 2)
            users[nu++] = ws->w[i + 1];
        if (i + 1 < ws->n && strcmp(w, "client") == 0 && nc < 2)
            cids[nc++] = ws->w[i + 1];
        if (nf < MAX_FILTERS && mqtt_topic_filter_valid((const uint8_t *)w, strlen(w)))
            filters[nf++] = w;
    }
    const char *ids[][2] = {
        {NULL, NULL},    {users[0], cids[0]}, {users[1], NULL},
        {NULL, cids[1]}, {"a/b", "+"},        {users[0] ? users[0] : "u", cids[1] ? cids[1] : "c"},
    };
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        query(a, ids[i][0], ids[i][1], AUTH_ACT_PUBLISH, filters, nf);
        query(a, ids[i][0], ids[i][1], AUTH_ACT_SUBSCRIBE, filters, nf);
    }
    free(ws);
    auth_acl_free(a);
    return 0;
}
