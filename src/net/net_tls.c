/* net_tls.c -- TLS transport (OpenSSL 3): contexts per listener, non-blocking
 * server handshakes, reads and writes on a connection's socket.  See
 * net_tls.h for the design.  Errors are taken from OpenSSL's per-thread
 * error queue, which is cleared before each call.
 */
#include "net_tls.h"

#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

void tls_error_text(SSL *ssl, int ret, int err, const char *peer_cert, char *out, size_t size)
{
    unsigned long e = ERR_peek_error();
    char buf[256] = "";
    if (e) {
        const char *r = ERR_reason_error_string(e);
        if (r)
            snprintf(buf, sizeof(buf), "%s", r);
        else
            ERR_error_string_n(e, buf, sizeof(buf));
    } else if (err == SSL_ERROR_SYSCALL) {
        snprintf(buf, sizeof(buf), "%s",
                 errno && ret < 0 ? strerror(errno) : "connection closed during TLS");
    } else if (err == SSL_ERROR_ZERO_RETURN) {
        snprintf(buf, sizeof(buf), "closed by peer (close_notify)");
    } else {
        snprintf(buf, sizeof(buf), "SSL error %d", err);
    }
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v != X509_V_OK)
        snprintf(out, size, "%s (%s: %s)", buf, peer_cert, X509_verify_cert_error_string(v));
    else
        snprintf(out, size, "%s", buf);
    ERR_clear_error();
}

static void reason(SSL *ssl, int ret, int err, char *why, size_t whylen)
{
    tls_error_text(ssl, ret, err, SSL_is_server(ssl) ? "client certificate" : "server certificate",
                   why, whylen);
}

/* who: "listener NAME" or "cluster" (the start of the message). */
static int file_err(const char *who, const char *what, const char *file, char *err, size_t errlen)
{
    /* What an operator can act on: the file's own errno when it cannot be
     * read, else OpenSSL's reason in words ("no start line", "key values
     * mismatch"), not its packed code (error:0A080002:...). */
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s %s: cannot read it: %s", who, what, file, strerror(errno));
        ERR_clear_error();
        return -1;
    }
    fclose(f);
    unsigned long e = ERR_peek_error(); /* the first: the cause, not "PEM lib" */
    const char *why = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, errlen, "%s: %s %s: %s", who, what, file, why ? why : "not a usable PEM file");
    ERR_clear_error();
    return -1;
}

struct ssl_ctx_st *tls_ctx_new(const conf_listener_t *l, char *err, size_t errlen)
{
    char who[96];
    snprintf(who, sizeof(who), "listener %.80s", l->name);
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "listener %s: cannot create a TLS context", l->name);
        return NULL;
    }
    int minv = l->tls_min_version == CONF_TLS_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (!SSL_CTX_set_min_proto_version(ctx, minv)) {
        snprintf(err, errlen, "listener %s: cannot set tls_min_version", l->name);
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (!SSL_CTX_set_cipher_list(ctx, l->ciphers)) {
        snprintf(err, errlen, "listener %s: ciphers \"%s\": no usable cipher", l->name, l->ciphers);
        ERR_clear_error();
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, l->cert_file) != 1) {
        file_err(who, "cert_file", l->cert_file, err, errlen);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, l->key_file, SSL_FILETYPE_PEM) != 1) {
        file_err(who, "key_file", l->key_file, err, errlen);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        file_err(who, "key_file", l->key_file, err, errlen);
        goto fail;
    }
    if (l->ca_file[0]) {
        if (SSL_CTX_load_verify_locations(ctx, l->ca_file, NULL) != 1) {
            file_err(who, "ca_file", l->ca_file, err, errlen);
            goto fail;
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(l->ca_file);
        if (names)
            SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | (l->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
            NULL);
    }
    /* resumption: tickets are on by default; a session id context is
     * needed for resumed sessions that carried a client certificate */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)l->name,
                                   (unsigned)strnlen(l->name, SSL_MAX_SID_CTX_LENGTH));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct ssl_ctx_st *tls_link_ctx_new(const char *cert_file, const char *key_file,
                                    const char *ca_file, const char **bad, char *err, size_t errlen)
{
    ERR_clear_error();
    *bad = "tls";
    SSL_CTX *ctx = SSL_CTX_new(TLS_method()); /* both roles: a node dials and accepts */
    if (ctx == NULL) {
        snprintf(err, errlen, "cluster: cannot create a TLS context");
        return NULL;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL")) {
        snprintf(err, errlen, "cluster: cannot set the TLS version or ciphers");
        ERR_clear_error();
        goto fail;
    }
    /* links live long: no tickets, no session cache; partial writes from
     * a buffer that may move (the link's output is compacted) */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        *bad = "tls_cert_file";
        file_err("cluster", "tls_cert_file", cert_file, err, errlen);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        *bad = "tls_key_file";
        file_err("cluster", "tls_key_file", key_file, err, errlen);
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        *bad = "tls_ca_file";
        file_err("cluster", "tls_ca_file", ca_file, err, errlen);
        goto fail;
    }
    /* mutual: each side presents its certificate and verifies the other's */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    *bad = NULL;
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tls_peer_has_name(struct ssl_st *ssl, const char *name)
{
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    int ok = cert != NULL && SSL_get_verify_result(ssl) == X509_V_OK &&
             X509_check_host(cert, name, strlen(name), 0, NULL) == 1;
    ERR_clear_error();
    return ok;
}

void tls_ctx_free(struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(ctx);
}

int tls_ctx_copy_ticket_keys(struct ssl_ctx_st *to, struct ssl_ctx_st *from)
{
    /* 16-byte key name, 32-byte HMAC secret, 32-byte AES key (OpenSSL 3) */
    unsigned char keys[80];
    int ok = SSL_CTX_get_tlsext_ticket_keys(from, keys, sizeof(keys)) == 1 &&
             SSL_CTX_set_tlsext_ticket_keys(to, keys, sizeof(keys)) == 1;
    OPENSSL_cleanse(keys, sizeof(keys));
    ERR_clear_error();
    return ok ? 0 : -1;
}

/* Copy a certificate name (bytes, length n) when printable. */
static int copy_name(const unsigned char *p, int n, char *buf, size_t size)
{
    if (p == NULL || n <= 0 || size == 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return -1;
    size_t len = AN_MIN((size_t)n, size - 1);
    memcpy(buf, p, len);
    buf[len] = '\0';
    return (int)len;
}

int tls_peer_username(struct ssl_st *ssl, int kind, char *buf, size_t size)
{
    if (ssl == NULL || SSL_get_verify_result(ssl) != X509_V_OK)
        return -1;
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (cert == NULL)
        return -1;
    int rc = -1;
    if (kind == CONF_CERT_USER_CN) {
        X509_NAME *subj = X509_get_subject_name(cert);
        int i = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
        if (i >= 0) {
            ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i));
            unsigned char *utf8 = NULL;
            int n = d ? ASN1_STRING_to_UTF8(&utf8, d) : -1;
            if (n > 0)
                rc = copy_name(utf8, n, buf, size);
            OPENSSL_free(utf8);
        }
    } else if (kind == CONF_CERT_USER_SAN) {
        GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
        for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
            const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
            if (g->type == GEN_DNS || g->type == GEN_EMAIL) {
                const ASN1_IA5STRING *s = g->type == GEN_DNS ? g->d.dNSName : g->d.rfc822Name;
                rc = copy_name(ASN1_STRING_get0_data(s), ASN1_STRING_length(s), buf, size);
                break;
            }
        }
        GENERAL_NAMES_free(names);
    }
    ERR_clear_error();
    return rc;
}

struct ssl_st *tls_new(struct ssl_ctx_st *ctx, int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(ssl);
    return ssl;
}

struct ssl_st *tls_new_client(struct ssl_ctx_st *ctx, int fd)
{
    SSL *ssl = tls_new(ctx, fd);
    if (ssl != NULL)
        SSL_set_connect_state(ssl);
    return ssl;
}

void tls_free(struct ssl_st *ssl)
{
    SSL_free(ssl);
}

int tls_handshake(struct ssl_st *ssl, char *why, size_t whylen)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return TLS_OK;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return TLS_WANT_WRITE;
    reason(ssl, rc, e, why, whylen);
    return e == SSL_ERROR_ZERO_RETURN ? TLS_CLOSED : TLS_ERROR;
}

ssize_t tls_read(struct ssl_st *ssl, void *buf, size_t n, char *why, size_t whylen)
{
    ERR_clear_error();
    errno = 0;
    size_t got = 0;
    int rc = SSL_read_ex(ssl, buf, n, &got);
    if (rc == 1)
        return (ssize_t)got;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return -TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return -TLS_WANT_WRITE;
    if (e == SSL_ERROR_ZERO_RETURN)
        snprintf(why, whylen, "connection closed by peer");
    else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)
        snprintf(why, whylen, "connection closed by peer");
    else
        reason(ssl, rc, e, why, whylen);
    ERR_clear_error();
    return 0;
}

ssize_t tls_write(struct ssl_st *ssl, const void *buf, size_t n, char *why, size_t whylen)
{
    ERR_clear_error();
    errno = 0;
    size_t put = 0;
    int rc = SSL_write_ex(ssl, buf, n, &put);
    if (rc == 1)
        return (ssize_t)put;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return -TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return -TLS_WANT_WRITE;
    reason(ssl, rc, e, why, whylen);
    return -TLS_CLOSED;
}

void tls_shutdown(struct ssl_st *ssl)
{
    if (SSL_is_init_finished(ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl);
        ERR_clear_error();
    }
}

const char *tls_describe(struct ssl_st *ssl, char *buf, size_t size)
{
    snprintf(buf, size, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
    return buf;
}

/* ---- the tls transport (transport.h) ---- */

typedef struct {
    transport_t tp; /* first: the layer's header */
    SSL *ssl;
} tls_tp_t;

static int tls_tp_handshake(transport_t *t, int fd, char *why, size_t whylen)
{
    (void)fd;
    switch (tls_handshake(((tls_tp_t *)t)->ssl, why, whylen)) {
    case TLS_OK:
        return TP_OK;
    case TLS_WANT_READ:
        return TP_WANT_READ;
    case TLS_WANT_WRITE:
        return TP_WANT_WRITE;
    default:
        return TP_ERROR;
    }
}

/* Decrypt until buf is full or OpenSSL needs more from the socket (read
 * ahead stays off: the socket keeps what is not needed yet). */
static int tls_tp_read(transport_t *t, int fd, tp_read_t *r)
{
    (void)fd;
    SSL *ssl = ((tls_tp_t *)t)->ssl;
    size_t got = 0;
    int rc = TP_OK;
    while (got < r->cap) {
        ssize_t n = tls_read(ssl, r->buf + got, r->cap - got, r->why, sizeof(r->why));
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n == 0)
            rc = TP_CLOSED;
        break;
    }
    r->data = r->buf;
    r->len = r->wire = got;
    return rc;
}

static ssize_t tls_tp_write(transport_t *t, int fd, const uint8_t *data, size_t n, unsigned flags)
{
    (void)fd;
    (void)flags;
    if (n == 0)
        return 0;
    char why[300];
    ssize_t r = tls_write(((tls_tp_t *)t)->ssl, data, n, why, sizeof(why));
    if (r > 0)
        return r;
    if (r == -TLS_WANT_WRITE || r == -TLS_WANT_READ)
        return 0;
    errno = ECONNRESET;
    return TP_ERROR;
}

static const char *tls_tp_waiting(const transport_t *t)
{
    return SSL_is_init_finished(((const tls_tp_t *)t)->ssl) ? NULL : "TLS handshake";
}

static void tls_tp_shutdown(transport_t *t, int fd)
{
    (void)fd;
    tls_shutdown(((tls_tp_t *)t)->ssl);
}

static void tls_tp_free(transport_t *t)
{
    tls_free(((tls_tp_t *)t)->ssl);
    free(t);
}

static const char *tls_tp_describe(const transport_t *t, char *buf, size_t size)
{
    return tls_describe(((const tls_tp_t *)t)->ssl, buf, size);
}

static int tls_tp_peer_name(const transport_t *t, int kind, char *buf, size_t size)
{
    return tls_peer_username(((const tls_tp_t *)t)->ssl, kind, buf, size);
}

static const transport_ops_t tls_ops = {
    .name = "tls",
    .handshake = tls_tp_handshake,
    .read = tls_tp_read,
    .write = tls_tp_write,
    .waiting = tls_tp_waiting,
    .shutdown = tls_tp_shutdown,
    .free = tls_tp_free,
    .describe = tls_tp_describe,
    .peer_cert_name = tls_tp_peer_name,
};

transport_t *tls_transport_new(struct ssl_st *ssl)
{
    tls_tp_t *t = an_calloc(1, sizeof(*t));
    t->tp.ops = &tls_ops;
    t->ssl = ssl;
    return &t->tp;
}
