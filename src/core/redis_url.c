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
    if (strncmp(url, "redis://", 8) != 0)
        return url_fail(err, errlen, url,
                        "expected redis://[user:password@]host[:port][/db] or unix:/path");
    const char *p = url + 8;
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
