/* redis_url.h -- a Redis server's address as written in the configuration
 * (persistence.redis.url): "redis://[user:password@]host[:port][/db]"
 * (host a name, an IPv4 address or [IPv6]), "unix:/path/to/socket", or
 * "redis-sentinel://[user:password@]host:port[,host:port...]/MASTER[/db]":
 * up to REDIS_URL_SENTINELS Sentinels asked in turn for MASTER's address
 * (the credentials are the master's; the Sentinels are asked without).
 * Parsed by conf.c (to refuse a bad one with its file:line) and by the
 * store's Redis backend (to connect).  Pure functions, any thread.
 */
#ifndef ANTENNA_REDIS_URL_H
#define ANTENNA_REDIS_URL_H

#include <stddef.h>
#include <stdint.h>

#define REDIS_URL_SENTINELS 8

typedef struct redis_url {
    char host[256];
    uint16_t port;       /* default 6379 */
    char unix_path[108]; /* "unix:/path": the socket; host unused */
    char user[128], pass[256];
    uint32_t db;       /* default 0 */
    char display[320]; /* the address without credentials, for messages */
    /* redis-sentinel://: the Sentinels (host and port unused until one of
     * them names the master) and the master's name; nsent 0 otherwise */
    uint32_t nsent;
    struct {
        char host[128];
        uint16_t port;
    } sent[REDIS_URL_SENTINELS];
    char master[128];
} redis_url_t;

/* Parses url into *a: 0, or -1 with the reason in err (without the url,
 * which may hold a password). */
int redis_url_parse(const char *url, redis_url_t *a, char *err, size_t errlen);

#endif
