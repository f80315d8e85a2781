/* bench_tls.c -- antenna-bench --tls: the client SSL_CTX and session reuse.
 *
 * The parent builds one SSL_CTX (OpenSSL 3, TLS 1.2 or later) before it
 * forks, so a bad --cafile/--cert/--key fails at once; every worker inherits
 * it.  Without --cafile nothing is verified (SSL_VERIFY_NONE); with it the
 * broker's chain must verify against that file (the host name is not
 * checked).  --cert/--key present a client certificate.
 *
 * --tls-resume: each worker process keeps one SSL_SESSION, the latest the
 * broker handed it (TLS 1.3 NewSessionTicket or a TLS 1.2 session, through
 * the client session-cache callback), and offers it on every new connection.
 * The first connections of a process (those started before any ticket
 * arrived) are full handshakes; tls_resumed counts the ones the broker
 * accepted (SSL_session_reused).
 *
 * The handshake and the I/O themselves are in bench_client.c, driven by the
 * epoll loop on the non-blocking socket (SSL_set_fd, WANT_READ/WANT_WRITE).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "bench_worker.h"
#include "net_tls.h" /* tls_error_text, shared with the broker */

static SSL_CTX *ctx;
static SSL_SESSION *session; /* per process (after fork) */

static void die_ssl(const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    fprintf(stderr, "antenna-bench: %s '%s': %s\n", what, file ? file : "", buf);
    exit(2);
}

/* The client session cache's new-session callback: keep the latest. */
static int on_new_session(SSL *ssl, SSL_SESSION *s)
{
    (void)ssl;
    if (!SSL_SESSION_is_resumable(s))
        return 0;
    if (session)
        SSL_SESSION_free(session);
    session = s; /* returning 1 keeps the reference OpenSSL gave us */
    return 1;
}

void btls_setup(void)
{
    if (!g_opt.tls)
        return;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die_ssl("SSL_CTX_new", NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* idle connections (conn mode) give their record buffers back */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    if (g_opt.cafile) {
        if (SSL_CTX_load_verify_locations(ctx, g_opt.cafile, NULL) != 1)
            die_ssl("cannot load --cafile", g_opt.cafile);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (g_opt.certfile) {
        if (SSL_CTX_use_certificate_chain_file(ctx, g_opt.certfile) != 1)
            die_ssl("cannot load --cert", g_opt.certfile);
        if (SSL_CTX_use_PrivateKey_file(ctx, g_opt.keyfile, SSL_FILETYPE_PEM) != 1)
            die_ssl("cannot load --key", g_opt.keyfile);
        if (SSL_CTX_check_private_key(ctx) != 1)
            die_ssl("--key does not match --cert", g_opt.keyfile);
    }
    if (g_opt.tls_resume) {
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
}

SSL *btls_new(int fd)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    if (SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return NULL;
    }
    if (g_opt.tls_resume && session) {
        /* A copy for each connection: OpenSSL's client writes into the
         * session it resumes, so one SSL_SESSION offered by several
         * handshakes in flight at once fails a share of them (measured:
         * 70-88 % resumed with 10-100 in flight, 99.7 % with copies);
         * that, not the broker, was the "56-78 % with 2 workers". */
        SSL_SESSION *d = SSL_SESSION_dup(session);
        SSL_set_session(ssl, d);
        SSL_SESSION_free(d);
    }
    return ssl;
}

void btls_handshake_done(SSL *ssl)
{
    W.st.c[C_tls_ok]++;
    if (SSL_session_reused(ssl))
        W.st.c[C_tls_resumed]++;
}

void btls_reason(SSL *ssl, int ret, int err, const char *what, char *out, size_t size)
{
    char buf[320];
    tls_error_text(ssl, ret, err, "server certificate", buf, sizeof(buf));
    snprintf(out, size, "%s: %s", what, buf);
}
