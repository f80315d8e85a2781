/* api_http.c -- the management API's HTTP server: listener, TLS,
 * authentication, routing, JSON errors (docs/api.md is the contract).
 *
 * libmicrohttpd runs the listener on a pool of two threads (epoll).  We
 * open, bind and listen on the socket ourselves (clear errors, port 0
 * resolved by getsockname) and hand it to MHD.  A request's body (POST)
 * is gathered in a per-request buffer capped at API_MAX_BODY.  Every answer
 * is JSON except /metrics (text) and the dashboard's files; every error is
 * {"error", "code", "field"?}.  Handlers live in api_routes.c; this file
 * only dispatches.
 *
 * Credentials (api_keys.h) are loaded at start and on SIGHUP; the pointer
 * is swapped under creds_lock (a read lock per request: held only for the
 * check, never across a wait for the workers).
 *
 * Held-open connections: MHD limits connections per peer address
 * (api.max_connections_per_ip) and closes idle ones (request_timeout_s);
 * api_conns.h gives every request a deadline and makes room for a new
 * connection when max_connections are open, so /health/live answers
 * through a pool full of slow clients.  Every answer carries the security
 * headers (CSP, X-Frame-Options, nosniff, Referrer-Policy); a body sent with
 * POST/PUT/PATCH must be application/json (else 415; a POST .../import
 * may be text/csv or application/x-ndjson too).
 */
#include "api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api_conns.h"
#include "api_int.h"
#include "api_keys.h"
#include "api_snap.h"
#include "api_static.h"
#include "log.h"

#define API_MAX_BODY (1024 * 1024 + 4096)
/* bulk imports (POST .../import: the devices module's fleets) */
#define API_MAX_BODY_IMPORT (64 * 1024 * 1024)
/* An import is computed in the request's thread (100,000 devices: ~3 s on
 * a release build, over 12 s under ASan on a busy host): its connection's
 * deadline while it is answered, instead of api_timeout_ms, so that the
 * reaper (api_conns.h) does not cut an answer the client waits for. */
#define API_IMPORT_ANSWER_MS (10u * 60u * 1000u)
/* The dashboard loads only its own files (no inline script or style, the
 * favicon is a data: URL) and calls the API on the same origin. */
#define API_CSP                                                                                    \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

struct api_s {
    server_t *srv;
    struct MHD_Daemon *d;
    int fd;
    uint16_t port;
    pthread_rwlock_t creds_lock;
    api_creds_t *creds;
    char *tls_cert, *tls_key; /* PEM text, kept for MHD's lifetime */
    api_conns_t *conns;
};

typedef struct {
    char *body;
    size_t len, cap; /* cap: bytes allocated, doubled (a 64 MiB import
                      * arrives in many pieces) */
    int too_large;
    size_t max_body; /* API_MAX_BODY, or API_MAX_BODY_IMPORT */
} req_t;

/* ---- responses ---------------------------------------------------------- */

/* Queue r with the headers every answer carries, and release it. */
static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r)
{
    MHD_add_response_header(r, "Content-Security-Policy", API_CSP);
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result api_send_text(struct MHD_Connection *c, unsigned status, const char *type,
                              char *text, size_t len)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    return queue(c, status, r);
}

enum MHD_Result api_send_json(struct MHD_Connection *c, unsigned status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s == NULL)
        return api_send_error(c, 500, "internal", NULL, "cannot encode the answer");
    return api_send_text(c, status, "application/json", s, strlen(s));
}

enum MHD_Result api_send_empty(struct MHD_Connection *c, unsigned status)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    return queue(c, status, r);
}

enum MHD_Result api_send_error(struct MHD_Connection *c, unsigned status, const char *code,
                               const char *field, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    json_t *j = json_object();
    json_object_set_new(j, "error", json_string(text));
    int challenge = strcmp(code, "unauthorized") == 0;
    if (strcmp(code, "unauthorized_nochallenge") == 0)
        code = "unauthorized";
    json_object_set_new(j, "code", json_string(code));
    if (field && status != 405)
        json_object_set_new(j, "field", json_string(field));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == 401 && challenge)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"antenna\", Basic realm=\"antenna\"");
    if (status == 405)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, field ? field : "GET");
    return queue(c, status, r);
}

/* ---- dispatch ---------------------------------------------------------- */

static enum MHD_Result serve_static(struct MHD_Connection *c, const char *url)
{
    const api_static_file_t *f = api_static_find(url);
    if (f == NULL)
        return api_send_error(c, 404, "not_found", NULL, "no such file: %s", url);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(f->len, (void *)f->data, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, f->content_type);
    return queue(c, 200, r);
}

static int authorized(api_t *api, struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (h == NULL)
        return 0;
    pthread_rwlock_rdlock(&api->creds_lock);
    int ok = api_creds_check(api->creds, h) != NULL;
    pthread_rwlock_unlock(&api->creds_lock);
    return ok;
}

/* A bulk import's body may also be CSV or JSON lines (types a browser
 * cannot send cross-site without a preflight, as application/json). */
static int import_content_type(struct MHD_Connection *c)
{
    const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    static const char *const ok[] = {"text/csv", "application/x-ndjson", "application/jsonl"};
    for (size_t i = 0; t && i < sizeof(ok) / sizeof(ok[0]); i++)
        if (strncasecmp(t, ok[i], strlen(ok[i])) == 0)
            return 1;
    return 0;
}

/* A body must be JSON: "application/json", parameters allowed. */
static int json_content_type(struct MHD_Connection *c)
{
    const char *t = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (t == NULL)
        return 0;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = strlen("application/json");
    if (strncasecmp(t, "application/json", n) != 0)
        return 0;
    t += n;
    while (*t == ' ' || *t == '\t')
        t++;
    return *t == '\0' || *t == ';';
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    api_t *api = cls;
    (void)version;
    req_t *rq = *con_cls;
    if (rq == NULL) { /* first call: headers only */
        rq = an_calloc(1, sizeof(*rq));
        size_t ul = strlen(url);
        rq->max_body =
            ul > 7 && strcmp(url + ul - 7, "/import") == 0 ? API_MAX_BODY_IMPORT : API_MAX_BODY;
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size) { /* a piece of the body */
        if (rq->len + *upload_size > rq->max_body) {
            rq->too_large = 1;
        } else {
            if (rq->len + *upload_size + 1 > rq->cap) {
                size_t cap = rq->cap ? rq->cap : 4096;
                while (cap < rq->len + *upload_size + 1)
                    cap *= 2;
                rq->body = an_realloc(rq->body, cap);
                rq->cap = cap;
            }
            memcpy(rq->body + rq->len, upload, *upload_size);
            rq->len += *upload_size;
            rq->body[rq->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    /* the whole request is in: no request deadline while it is answered */
    api_conns_answering(api->conns, c,
                        rq->max_body == API_MAX_BODY_IMPORT ? API_IMPORT_ANSWER_MS
                                                            : api->srv->conf.api_timeout_ms);
    if (rq->too_large)
        return api_send_error(c, 413, "payload_too_large", "body", "the body is over %zu bytes",
                              rq->max_body);

    api_req_t r = {.api = api,
                   .srv = api->srv,
                   .conn = c,
                   .method = method,
                   .url = url,
                   .body = rq->body,
                   .body_len = rq->len};
    if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0 ||
        strncmp(url, "/static/", 8) == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return api_send_error(c, 405, "method_not_allowed", "GET", "use GET");
        return serve_static(c, url);
    }
    int open_path = (strncmp(url, "/health/", 8) == 0 && api->srv->conf.api_open_health) ||
                    (strcmp(url, "/metrics") == 0 && api->srv->conf.api_open_metrics);
    if (!open_path && !authorized(api, c)) {
        /* the dashboard's fetch() calls say who they are: no Basic
         * challenge for them, or the browser pops its own login dialog */
        const char *xrw = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Requested-With");
        return api_send_error(c, 401, xrw ? "unauthorized_nochallenge" : "unauthorized", NULL,
                              "missing or invalid credentials");
    }
    if (rq->len > 0 && !json_content_type(c) &&
        !(rq->max_body == API_MAX_BODY_IMPORT && import_content_type(c)) &&
        (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0))
        return api_send_error(c, 415, "unsupported_media_type", "Content-Type",
                              "a request body must be JSON (Content-Type: application/json)");
    return api_route(&r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    api_t *api = cls;
    (void)toe;
    api_conns_waiting(api->conns, c);
    req_t *rq = *con_cls;
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* ---- start / stop ------------------------------------------------------- */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = an_malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0)
            buf = an_realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* 0: listening; 1: the port is taken and the API is optional (a warning,
 * not an error); -1: an error, logged. */
static int open_socket(api_t *api, const conf_t *cf)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    socklen_t len;
    int v6 = strchr(cf->api_bind, ':') != NULL;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(cf->api_port);
        if (inet_pton(AF_INET6, cf->api_bind, &a->sin6_addr) != 1)
            goto bad_addr;
        len = sizeof(*a);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(cf->api_port);
        if (inet_pton(AF_INET, cf->api_bind, &a->sin_addr) != 1)
            goto bad_addr;
        len = sizeof(*a);
    }
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (v6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 128) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        goto fail;
    }
    len = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &len);
    api->port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    api->fd = fd;
    return 0;
bad_addr:
    log_error("api: bind '%s' is not an IPv4 or IPv6 literal", cf->api_bind);
    return -1;
fail:
    if (errno == EADDRINUSE && cf->api_optional) {
        log_warn("api: %s:%u is taken (another program listens there): the broker runs "
                 "without the management API; use --api-port N or --no-api",
                 cf->api_bind, cf->api_port);
        return 1;
    }
    log_error("api: cannot listen on %s:%u: %s", cf->api_bind, cf->api_port, strerror(errno));
    return -1;
}

static void free_api(api_t *api)
{
    if (api->fd >= 0)
        close(api->fd);
    api_creds_free(api->creds);
    pthread_rwlock_destroy(&api->creds_lock);
    free(api->tls_cert);
    free(api->tls_key);
    api_conns_free(api->conns);
    free(api);
}

int api_start(server_t *srv)
{
    const conf_t *cf = &srv->conf;
    if (!cf->api_enabled)
        return 0;
    api_snap_register_inbox(srv); /* before any request can post a job */
    api_t *api = an_calloc(1, sizeof(*api));
    api->srv = srv;
    api->fd = -1;
    pthread_rwlock_init(&api->creds_lock, NULL);
    char err[512];
    api->creds = api_creds_load(cf->api_keys_file, cf->api_users_file,
                                cf->api_min_password_iterations, err, sizeof(err));
    if (api->creds == NULL) {
        log_error("api: %s", err);
        goto fail;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
    int tls = cf->api_tls_cert[0] || cf->api_tls_key[0];
    if (tls) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            log_error("api: tls_cert/tls_key set but this libmicrohttpd has no TLS support");
            goto fail;
        }
        if (!cf->api_tls_cert[0] || !cf->api_tls_key[0]) {
            log_error("api: HTTPS needs both tls_cert and tls_key");
            goto fail;
        }
        api->tls_cert = read_file(cf->api_tls_cert);
        api->tls_key = read_file(cf->api_tls_key);
        if (api->tls_cert == NULL || api->tls_key == NULL) {
            log_error("api: cannot read %s: %s", api->tls_cert ? cf->api_tls_key : cf->api_tls_cert,
                      strerror(errno));
            goto fail;
        }
        flags |= MHD_USE_TLS;
    }
    if (strchr(cf->api_bind, ':'))
        flags |= MHD_USE_IPv6;
    int opened = open_socket(api, cf);
    if (opened < 0)
        goto fail;
    if (opened > 0) { /* optional and its port taken: no API, not an error */
        free_api(api);
        return 0;
    }
    /* MHD's own limit is a hard stop above max_connections: api_conns
     * evicts before it is reached (the pool's two threads share it, half
     * each, so twice the maximum lets either thread hold all of it) */
    uint32_t hard = 2u * cf->api_max_connections + 16u;
    api->conns = api_conns_new(cf->api_max_connections, hard, cf->api_request_timeout_s);
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_LISTEN_SOCKET, api->fd, NULL},
        {MHD_OPTION_THREAD_POOL_SIZE, 2, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, api},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)api_conns_notify, api->conns},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cf->api_request_timeout_s, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)hard, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)cf->api_max_connections_per_ip, NULL},
        /* without TLS the array ends here */
        {tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, api->tls_cert},
        {MHD_OPTION_HTTPS_MEM_KEY, 0, api->tls_key},
        {MHD_OPTION_END, 0, NULL},
    };
    if (api_conns_start(api->conns) < 0) {
        log_error("api: cannot start a thread: %s", strerror(errno));
        goto fail;
    }
    /* counted before the first request: POST /api/v1/reload replaces them */
    size_t ncreds = api_creds_count(api->creds);
    srv->api = api; /* before the first request (api_reload reads it) */
    api->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, api, MHD_OPTION_ARRAY, opts,
                              MHD_OPTION_END);
    if (api->d == NULL) {
        srv->api = NULL;
        log_error("api: cannot start the HTTP server on %s:%u%s", cf->api_bind, api->port,
                  tls ? " (check tls_cert and tls_key)" : "");
        goto fail;
    }
    api->fd = -1; /* MHD owns the listening socket now and closes it */
    log_info("api: listening on %s:%u (%s, %zu credentials)", cf->api_bind, api->port,
             tls ? "https" : "http", ncreds);
    if (ncreds == 0)
        log_warn("api: no keys_file or users_file: every authenticated endpoint answers 401");
    return 0;
fail:
    free_api(api);
    return -1;
}

void api_stop(server_t *srv)
{
    api_t *api = srv->api;
    if (api == NULL)
        return;
    api_conns_stop(api->conns); /* no shutdown() while MHD closes its sockets */
    MHD_stop_daemon(api->d);    /* joins its threads: no request runs after this */
    srv->api = NULL;            /* after: a request's reload reads it */
    free_api(api);
}

int api_reload(server_t *srv)
{
    api_t *api = srv->api;
    if (api == NULL)
        return 0;
    char err[512];
    api_creds_t *c = api_creds_load(srv->conf.api_keys_file, srv->conf.api_users_file,
                                    srv->conf.api_min_password_iterations, err, sizeof(err));
    if (c == NULL) {
        log_error("api: reload: %s (the previous credentials stay)", err);
        return -1;
    }
    pthread_rwlock_wrlock(&api->creds_lock);
    api_creds_t *old = api->creds;
    api->creds = c;
    pthread_rwlock_unlock(&api->creds_lock);
    api_creds_free(old);
    log_info("api: credentials reloaded (%zu)", api_creds_count(c));
    return 0;
}

uint16_t api_port(const server_t *srv)
{
    return srv->api ? srv->api->port : 0;
}
