/* auth_acl.c -- rule sets: parsing, %u/%c expansion, matching (auth_acl.h).
 *
 * A rule set is a flat array checked in order; no index.  The per-
 * connection decision cache (auth_chain.c) keeps the hot path from
 * walking it for every message.  Expansion writes into a stack buffer
 * (a heap one past 512 bytes); nothing is allocated per check otherwise.
 */
#include "auth_acl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "mqtt_codec.h"
#include "trie.h"
#include "util.h"

typedef struct {
    uint8_t allow;
    uint8_t access; /* AUTH_ACT_PUBLISH | AUTH_ACT_SUBSCRIBE */
    uint8_t scope;  /* AUTH_ACL_* */
    uint8_t subst;  /* the filter holds %u or %c */
    char *who;      /* user or client id, NULL for AUTH_ACL_ANY */
    char *filter;
    size_t flen;
} acl_rule_t;

struct auth_acl {
    acl_rule_t *v;
    size_t n, cap;
};

auth_acl_t *auth_acl_new(void)
{
    return an_calloc(1, sizeof(auth_acl_t));
}

size_t auth_acl_count(const auth_acl_t *a)
{
    return a ? a->n : 0;
}

void auth_acl_free(auth_acl_t *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++) {
        free(a->v[i].who);
        free(a->v[i].filter);
    }
    free(a->v);
    free(a);
}

int auth_acl_add(auth_acl_t *a, int allow, uint8_t access, uint8_t scope, const char *who,
                 const char *filter)
{
    size_t flen = strlen(filter);
    if (flen == 0 || flen > 65535 || !mqtt_topic_filter_valid((const uint8_t *)filter, flen))
        return -1;
    if ((access & (AUTH_ACT_PUBLISH | AUTH_ACT_SUBSCRIBE)) == 0)
        return -1;
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = an_realloc(a->v, a->cap * sizeof(*a->v));
    }
    acl_rule_t *r = &a->v[a->n++];
    r->allow = allow ? 1 : 0;
    r->access = access;
    r->scope = scope;
    r->who =
        scope == AUTH_ACL_ANY || scope == AUTH_ACL_ANONYMOUS ? NULL : an_strndup(who, strlen(who));
    r->filter = an_strndup(filter, flen);
    r->flen = flen;
    r->subst = strstr(filter, "%u") != NULL || strstr(filter, "%c") != NULL;
    return 0;
}

/* ---- parsing ---- */

static uint8_t parse_access(const char *w)
{
    static const struct {
        const char *name;
        uint8_t access;
    } names[] = {
        {"pub", AUTH_ACT_PUBLISH},
        {"publish", AUTH_ACT_PUBLISH},
        {"write", AUTH_ACT_PUBLISH},
        {"sub", AUTH_ACT_SUBSCRIBE},
        {"subscribe", AUTH_ACT_SUBSCRIBE},
        {"read", AUTH_ACT_SUBSCRIBE},
        {"all", AUTH_ACT_PUBLISH | AUTH_ACT_SUBSCRIBE},
        {"both", AUTH_ACT_PUBLISH | AUTH_ACT_SUBSCRIBE},
        {"readwrite", AUTH_ACT_PUBLISH | AUTH_ACT_SUBSCRIBE},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(w, names[i].name) == 0)
            return names[i].access;
    return 0;
}

/* Where the parser is: the scope of the lines to come, and the deny rules
 * of Mosquitto-style lines, which go before every other rule at the end
 * (in Mosquitto a matching deny wins wherever it is written; first match
 * in file order gives the same answer once they come first). */
typedef struct {
    uint8_t scope;
    char *who;
    int scoped;       /* a user, client or any line was seen */
    auth_acl_t *deny; /* Mosquitto deny rules, in file order */
} parse_t;

/* Mosquitto's rule lines: "topic [read|write|readwrite|deny] FILTER" in
 * the current scope (before any user line: clients without a user name,
 * as in Mosquitto) and "pattern [ACCESS] FILTER" for every client.  An
 * omitted access is readwrite. */
static int parse_mosquitto(auth_acl_t *a, parse_t *ps, char **words, int n, const char **why)
{
    int pattern = words[0][0] == 'p';
    if (n != 2 && n != 3) {
        *why = pattern ? "expected 'pattern [read|write|readwrite|deny] FILTER'"
                       : "expected 'topic [read|write|readwrite|deny] FILTER'";
        return -1;
    }
    const char *filter = words[n - 1];
    uint8_t access = AUTH_ACT_PUBLISH | AUTH_ACT_SUBSCRIBE;
    int deny = 0;
    if (n == 3) {
        deny = strcmp(words[1], "deny") == 0;
        if (!deny && (access = parse_access(words[1])) == 0) {
            *why = "unknown access (read, write, readwrite or deny)";
            return -1;
        }
    }
    uint8_t scope = pattern ? AUTH_ACL_ANY : ps->scoped ? ps->scope : AUTH_ACL_ANONYMOUS;
    const char *who = scope == AUTH_ACL_USER || scope == AUTH_ACL_CLIENT ? ps->who : NULL;
    if (auth_acl_add(deny ? ps->deny : a, !deny, access, scope, who, filter) < 0) {
        *why = "invalid topic filter";
        return -1;
    }
    return 0;
}

/* One line (NUL terminated, may be modified).  0 or -1 with *why. */
static int parse_line(auth_acl_t *a, char *line, parse_t *ps, const char **why)
{
    char *words[4];
    int n = 0;
    line += strspn(line, " \t\r");
    if (line[0] == '#') /* a comment, however many words */
        return 0;
    for (char *save = NULL, *w = strtok_r(line, " \t\r", &save); w;
         w = strtok_r(NULL, " \t\r", &save)) {
        if (n == 4) {
            *why = "too many words";
            return -1;
        }
        words[n++] = w;
    }
    if (n == 0)
        return 0;
    if (strcmp(words[0], "topic") == 0 || (strcmp(words[0], "pattern") == 0 && n > 1))
        return parse_mosquitto(a, ps, words, n, why);
    if (strcmp(words[0], "any") == 0 || strcmp(words[0], "pattern") == 0) {
        if (n != 1) {
            *why = "'any' takes nothing after it";
            return -1;
        }
        ps->scope = AUTH_ACL_ANY;
        ps->scoped = 1;
        free(ps->who);
        ps->who = NULL;
        return 0;
    }
    if (strcmp(words[0], "user") == 0 || strcmp(words[0], "client") == 0) {
        if (n != 2) {
            *why = "expected 'user NAME' or 'client ID'";
            return -1;
        }
        ps->scope = words[0][0] == 'u' ? AUTH_ACL_USER : AUTH_ACL_CLIENT;
        ps->scoped = 1;
        free(ps->who);
        ps->who = an_strndup(words[1], strlen(words[1]));
        return 0;
    }
    int allow = 1, i = 0;
    if (strcmp(words[0], "allow") == 0 || strcmp(words[0], "deny") == 0) {
        allow = words[0][0] == 'a';
        i = 1;
    }
    if (n - i != 2) {
        *why = "expected [allow|deny] pub|sub|all FILTER (or Mosquitto's topic/pattern)";
        return -1;
    }
    uint8_t access = parse_access(words[i]);
    if (access == 0) {
        *why = "unknown access (pub, sub or all; read, write or readwrite)";
        return -1;
    }
    if (auth_acl_add(a, allow, access, ps->scope, ps->who, words[i + 1]) < 0) {
        *why = "invalid topic filter";
        return -1;
    }
    return 0;
}

/* Moves the rules of `first` in front of those of a (first is freed). */
static void prepend(auth_acl_t *a, auth_acl_t *first)
{
    if (first->n) {
        size_t n = a->n + first->n;
        acl_rule_t *v = an_malloc((n ? n : 1) * sizeof(*v));
        memcpy(v, first->v, first->n * sizeof(*v));
        if (a->n)
            memcpy(v + first->n, a->v, a->n * sizeof(*v));
        free(a->v);
        a->v = v;
        a->n = a->cap = n;
        first->n = 0; /* the strings moved with the rules */
    }
    auth_acl_free(first);
}

static auth_acl_t *parse_text(const char *text, size_t len, const char *who_src, char *err,
                              size_t errlen)
{
    auth_acl_t *a = auth_acl_new();
    parse_t ps = {.scope = AUTH_ACL_ANY, .who = NULL, .scoped = 0, .deny = auth_acl_new()};
    size_t lineno = 0, off = 0;
    while (off < len) {
        const char *nl = memchr(text + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - text) : len;
        lineno++;
        char *line = an_strndup(text + off, end - off);
        const char *why = NULL;
        int rc = strlen(line) != end - off ? (why = "contains a NUL character", -1)
                                           : parse_line(a, line, &ps, &why);
        free(line);
        if (rc < 0) {
            snprintf(err, errlen, "%s:%zu: %s", who_src, lineno, why);
            free(ps.who);
            auth_acl_free(ps.deny);
            auth_acl_free(a);
            return NULL;
        }
        off = end + 1;
    }
    free(ps.who);
    prepend(a, ps.deny);
    return a;
}

auth_acl_t *auth_acl_from_lines(const char *text, const char *who, char *err, size_t errlen)
{
    return parse_text(text, strlen(text), who, err, errlen);
}

auth_acl_t *auth_acl_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    auth_acl_t *a = NULL;
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? 2 * cap : 16384;
            if (cap > (64u << 20)) {
                snprintf(err, errlen, "%s: larger than 64 MiB", path);
                goto out;
            }
            buf = an_realloc(buf, cap);
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    a = parse_text(buf ? buf : "", len, path, err, errlen);
out:
    free(buf);
    fclose(f);
    return a;
}

/* ---- filter relations ---- */

static size_t level_end(const char *s, size_t from, size_t len)
{
    const char *p = from < len ? memchr(s + from, '/', len - from) : NULL;
    return p ? (size_t)(p - s) : len;
}

static int is_lvl(const char *s, size_t from, size_t end, char ch)
{
    return end - from == 1 && s[from] == ch;
}

/* The rest of s from `from` is exactly "#". */
static int rest_is_hash(const char *s, size_t from, size_t len)
{
    return len - from == 1 && s[from] == '#';
}

/* [MQTT-4.7.2-1] a filter starting with a wildcard matches no '$' topic. */
static int dollar_mismatch(const char *a, size_t alen, const char *b, size_t blen)
{
    int aw = alen && (a[0] == '+' || a[0] == '#') && (alen == 1 || a[1] == '/');
    int bw = blen && (b[0] == '+' || b[0] == '#') && (blen == 1 || b[1] == '/');
    return (aw && blen && b[0] == '$') || (bw && alen && a[0] == '$');
}

int auth_filter_covers(const char *r, size_t rlen, const char *f, size_t flen)
{
    if (dollar_mismatch(r, rlen, f, flen) && !(flen && f[0] == '$' && rlen && r[0] == '$'))
        return 0;
    size_t rp = 0, fp = 0;
    for (;;) {
        size_t re = level_end(r, rp, rlen), fe = level_end(f, fp, flen);
        if (is_lvl(r, rp, re, '#'))
            return 1;
        if (is_lvl(f, fp, fe, '#'))
            return 0;
        if (!is_lvl(r, rp, re, '+')) {
            if (is_lvl(f, fp, fe, '+'))
                return 0;
            if (re - rp != fe - fp || memcmp(r + rp, f + fp, re - rp) != 0)
                return 0;
        }
        int rlast = re == rlen, flast = fe == flen;
        if (rlast && flast)
            return 1;
        if (flast)
            return rest_is_hash(r, re + 1, rlen);
        if (rlast)
            return 0;
        rp = re + 1;
        fp = fe + 1;
    }
}

int auth_filter_intersects(const char *r, size_t rlen, const char *f, size_t flen)
{
    if (dollar_mismatch(r, rlen, f, flen))
        return 0;
    size_t rp = 0, fp = 0;
    for (;;) {
        size_t re = level_end(r, rp, rlen), fe = level_end(f, fp, flen);
        if (is_lvl(r, rp, re, '#') || is_lvl(f, fp, fe, '#'))
            return 1;
        if (!is_lvl(r, rp, re, '+') && !is_lvl(f, fp, fe, '+') &&
            (re - rp != fe - fp || memcmp(r + rp, f + fp, re - rp) != 0))
            return 0;
        int rlast = re == rlen, flast = fe == flen;
        if (rlast && flast)
            return 1;
        if (flast)
            return rest_is_hash(r, re + 1, rlen);
        if (rlast)
            return rest_is_hash(f, fe + 1, flen);
        rp = re + 1;
        fp = fe + 1;
    }
}

/* ---- checking ---- */

static int substitutable(const char *s)
{
    return s && s[0] && strpbrk(s, "+#/") == NULL;
}

/* Expand %u and %c of r into *out (buf, or a heap copy when larger).
 * Returns the length, or -1 when the rule cannot apply. */
static long expand(const acl_rule_t *r, const char *user, const char *cid, char *buf, size_t size,
                   char **heap)
{
    size_t need = 0;
    for (size_t i = 0; i < r->flen; i++) {
        if (r->filter[i] == '%' && i + 1 < r->flen &&
            (r->filter[i + 1] == 'u' || r->filter[i + 1] == 'c')) {
            const char *v = r->filter[i + 1] == 'u' ? user : cid;
            if (!substitutable(v))
                return -1;
            need += strlen(v);
            i++;
        } else {
            need++;
        }
    }
    char *out = buf;
    if (need + 1 > size)
        out = *heap = an_malloc(need + 1);
    size_t o = 0;
    for (size_t i = 0; i < r->flen; i++) {
        if (r->filter[i] == '%' && i + 1 < r->flen &&
            (r->filter[i + 1] == 'u' || r->filter[i + 1] == 'c')) {
            const char *v = r->filter[i + 1] == 'u' ? user : cid;
            size_t vl = strlen(v);
            memcpy(out + o, v, vl);
            o += vl;
            i++;
        } else {
            out[o++] = r->filter[i];
        }
    }
    out[o] = '\0';
    return (long)o;
}

/* Walk the rules of `action` that apply to this client; for each, its
 * expanded filter goes to fn, which returns -1 to go on, else the answer. */
typedef int (*rule_fn)(const acl_rule_t *r, const char *f, size_t flen, void *ud);

static int walk(const auth_acl_t *a, const char *user, const char *client_id, uint8_t action,
                rule_fn fn, void *ud)
{
    if (a == NULL)
        return -1;
    for (size_t i = 0; i < a->n; i++) {
        const acl_rule_t *r = &a->v[i];
        if (!(r->access & action))
            continue;
        if (r->scope == AUTH_ACL_USER && (user == NULL || strcmp(user, r->who) != 0))
            continue;
        if (r->scope == AUTH_ACL_ANONYMOUS && user && user[0])
            continue;
        if (r->scope == AUTH_ACL_CLIENT && (client_id == NULL || strcmp(client_id, r->who) != 0))
            continue;
        char buf[512], *heap = NULL;
        const char *f = r->filter;
        long flen = (long)r->flen;
        if (r->subst) {
            flen = expand(r, user, client_id, buf, sizeof(buf), &heap);
            if (flen < 0)
                continue;
            f = heap ? heap : buf;
        }
        int d = fn(r, f, (size_t)flen, ud);
        free(heap);
        if (d >= 0)
            return d;
    }
    return -1;
}

typedef struct {
    const char *s;
    size_t len;
    unsigned seen;
} probe_t;

static int topic_rule(const acl_rule_t *r, const char *f, size_t flen, void *ud)
{
    const probe_t *p = ud;
    return topic_matches((const uint8_t *)f, flen, (const uint8_t *)p->s, p->len) ? r->allow : -1;
}

static int filter_rule(const acl_rule_t *r, const char *f, size_t flen, void *ud)
{
    probe_t *p = ud;
    if (auth_filter_covers(f, flen, p->s, p->len))
        return r->allow;
    if (auth_filter_intersects(f, flen, p->s, p->len))
        p->seen |= r->allow ? AUTH_ACL_SEEN_ALLOW : AUTH_ACL_SEEN_DENY;
    return -1;
}

int auth_acl_combine(int decision, unsigned seen)
{
    if (decision == AUTH_ACL_PARTIAL)
        return AUTH_ACL_PARTIAL;
    if (decision)
        return seen & AUTH_ACL_SEEN_DENY ? AUTH_ACL_PARTIAL : AUTH_ACL_ALLOW;
    return seen & AUTH_ACL_SEEN_ALLOW ? AUTH_ACL_PARTIAL : AUTH_ACL_DENY;
}

int auth_acl_check_filter(const auth_acl_t *a, const char *user, const char *client_id,
                          uint8_t action, const char *filter, size_t len, unsigned *seen)
{
    probe_t p = {filter, len, 0};
    int d = walk(a, user, client_id, action, filter_rule, &p);
    *seen |= p.seen;
    return d;
}

int auth_acl_check(const auth_acl_t *a, const char *user, const char *client_id, uint8_t action,
                   const char *topic, size_t len, int is_filter)
{
    if (is_filter) {
        unsigned seen = 0;
        int d = auth_acl_check_filter(a, user, client_id, action, topic, len, &seen);
        return d < 0 ? -1 : auth_acl_combine(d, seen);
    }
    probe_t p = {topic, len, 0};
    return walk(a, user, client_id, action, topic_rule, &p);
}
