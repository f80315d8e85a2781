/* redis_url.c -- parsing a Redis address; see redis_url.h. */
#include "redis_url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int url_fail(char *err, size_t errlen, const char *url, const char *why)
{
    (void)url; /* never in a message: it may hold a password */
    snprintf(err, errlen, "%s", why);
    return -1;
}

/* One "host:port" of a Sentinel list, [v6]:port allowed: 0 or -1. */
static int parse_hostport(const char *p, size_t n, char *host, size_t hsize, uint16_t *port)
{
    const char *colon;
    if (n && *p == '[') {
        const char *rb = memchr(p, ']', n);
        if (rb == NULL || (size_t)(rb - p) >= hsize || rb + 1 >= p + n || rb[1] != ':')
            return -1;
        memcpy(host, p + 1, (size_t)(rb - p - 1));
        host[rb - p - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = memchr(p, ':', n);
        if (colon == NULL || colon == p || (size_t)(colon - p) >= hsize)
            return -1;
        memcpy(host, p, (size_t)(colon - p));
        host[colon - p] = '\0';
    }
    char num[8];
    size_t nl = (size_t)(p + n - colon - 1);
    if (nl == 0 || nl >= sizeof(num))
        return -1;
    memcpy(num, colon + 1, nl);
    num[nl] = '\0';
    char *e;
    unsigned long v = strtoul(num, &e, 10);
    if (*e != '\0' || v == 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* The part after "redis-sentinel://[creds@]": "h:p[,h:p...]/MASTER[/db]". */
static int parse_sentinels(const char *p, redis_url_t *a, char *err, size_t errlen)
{
    const char *slash = strchr(p, '/');
    if (slash == NULL || slash == p)
        return url_fail(err, errlen, p, "redis-sentinel:// needs host:port[,host:port]/master");
    if (slash[-1] == ',')
        return url_fail(err, errlen, p, "each Sentinel is host:port (an empty one before the /)");
    for (const char *s = p; s < slash;) {
        const char *e = memchr(s, ',', (size_t)(slash - s));
        if (e == NULL)
            e = slash;
        if (a->nsent == REDIS_URL_SENTINELS)
            return url_fail(err, errlen, p, "at most 8 Sentinels");
        if (parse_hostport(s, (size_t)(e - s), a->sent[a->nsent].host,
                           sizeof(a->sent[a->nsent].host), &a->sent[a->nsent].port) < 0)
            return url_fail(err, errlen, p,
                            "each Sentinel is host:port (port 1..65535; [IPv6]:port)");
        a->nsent++;
        s = e < slash ? e + 1 : e;
    }
    const char *m = slash + 1, *me = m + strcspn(m, "/");
    if (me == m || (size_t)(me - m) >= sizeof(a->master))
        return url_fail(err, errlen, p, "the master's name is missing or too long");
    memcpy(a->master, m, (size_t)(me - m));
    if (*me == '/' && me[1] != '\0') {
        char *e;
        unsigned long db = strtoul(me + 1, &e, 10);
        if (*e != '\0' || db > 65535)
            return url_fail(err, errlen, p, "the database must be a number (/0../65535)");
        a->db = (uint32_t)db;
    }
    int n = snprintf(a->display, sizeof(a->display), "redis-sentinel://");
    for (uint32_t i = 0; i < a->nsent && n > 0 && (size_t)n < sizeof(a->display); i++)
        n += snprintf(a->display + n, sizeof(a->display) - (size_t)n, "%s%s:%u", i ? "," : "",
                      a->sent[i].host, a->sent[i].port);
    if (n > 0 && (size_t)n < sizeof(a->display))
        snprintf(a->display + n, sizeof(a->display) - (size_t)n, "/%s/%u", a->master, a->db);
    return 0;
}

int redis_url_parse(const char *url, redis_url_t *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    a->port = 6379;
    if (strncmp(url, "unix:", 5) == 0) {
        const char *p = url + 5;
        while (p[0] == '/' && p[1] == '/') /* unix:///run/redis.sock */
            p++;
        if (p[0] != '/')
            return url_fail(err, errlen, url, "unix: needs an absolute socket path");
        if (strlen(p) >= sizeof(a->unix_path))
            return url_fail(err, errlen, url, "the socket path is too long");
        snprintf(a->unix_path, sizeof(a->unix_path), "%s", p);
        snprintf(a->display, sizeof(a->display), "unix:%s", p);
        return 0;
    }
    int sentinel = strncmp(url, "redis-sentinel://", 17) == 0;
    if (!sentinel && strncmp(url, "redis://", 8) != 0)
        return url_fail(err, errlen, url,
                        "expected redis://[user:password@]host[:port][/db], unix:/path or "
                        "redis-sentinel://host:port[,host:port]/master[/db]");
    const char *p = url + (sentinel ? 17 : 8);
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ul = colon ? (size_t)(colon - p) : 0;
        size_t pl = colon ? (size_t)(at - colon - 1) : (size_t)(at - p);
        if (ul >= sizeof(a->user) || pl >= sizeof(a->pass))
            return url_fail(err, errlen, url, "user or password too long");
        memcpy(a->user, p, ul);
        memcpy(a->pass, colon ? colon + 1 : p, pl);
        p = at + 1;
    }
    if (sentinel)
        return parse_sentinels(p, a, err, errlen);
    const char *end = p + strcspn(p, "/");
    const char *hend = end;
    if (*p == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (rb == NULL)
            return url_fail(err, errlen, url, "unterminated [IPv6 address]");
        memcpy(a->host, p + 1, AN_MIN((size_t)(rb - p - 1), sizeof(a->host) - 1));
        hend = rb + 1;
        if (hend < end && *hend != ':')
            return url_fail(err, errlen, url, "expected :port after the ]");
    } else {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hend = colon ? colon : end;
        if ((size_t)(hend - p) >= sizeof(a->host))
            return url_fail(err, errlen, url, "host name too long");
        memcpy(a->host, p, (size_t)(hend - p));
    }
    if (a->host[0] == '\0')
        return url_fail(err, errlen, url, "no host");
    if (hend < end && *hend == ':') {
        char *e;
        unsigned long port = strtoul(hend + 1, &e, 10);
        if (e == hend + 1 || e != end || port == 0 || port > 65535)
            return url_fail(err, errlen, url, "the port must be 1..65535");
        a->port = (uint16_t)port;
    }
    if (*end == '/' && end[1] != '\0') {
        char *e;
        unsigned long db = strtoul(end + 1, &e, 10);
        if (*e != '\0' || db > 65535)
            return url_fail(err, errlen, url, "the database must be a number (/0../65535)");
        a->db = (uint32_t)db;
    }
    snprintf(a->display, sizeof(a->display), "redis://%s%s%s:%u/%u",
             strchr(a->host, ':') ? "[" : "", a->host, strchr(a->host, ':') ? "]" : "", a->port,
             a->db);
    return 0;
}
