/* coapgw_sec.c -- the CoAP gateway's listeners, and who a secured peer is.
 *
 * What it owns: the endpoints of the gateway's libcoap context (made once,
 * by gw_start on the main thread, before the gateway thread runs) and the
 * rules that say which identity a (D)TLS handshake proved.
 *
 *   udp  port       always (coap://)
 *   dtls dtls_port  with psk_file or cert_file (coaps://)
 *   tcp  tcp_port   with tcp: true (coap+tcp://, RFC 8323)
 *   tls  tls_port   with tcp: true and psk_file or cert_file (coaps+tcp://)
 *
 * Security.  One libcoap context serves both handshake kinds: DTLS/TLS-PSK
 * with the keys of coap.psk_file (coapgw_psk.h: the identity is the user),
 * and certificates (PKI: cert_file and key_file are the gateway's; with
 * ca_file a client must present a certificate that chains to it, and its
 * CN, or first DNS/email subjectAltName with cert_username: san, is the
 * user).  The handshake is the authentication, as for a DTLS-PSK identity;
 * the ACL then applies to that user.  A PKI session without a client
 * certificate (no ca_file) authenticates per request, by its query
 * (?u=&p=, ?token=), as plain UDP does.  The identity of a session is read
 * when a request needs it (coap_session_get_tls gives the OpenSSL SSL;
 * tls_peer_username accepts only a verified certificate): nothing is kept
 * per session.
 *
 * Threads: coapgw_listen runs on the main thread at start; the callbacks
 * and coapgw_secure_user on the gateway thread (libcoap's).
 */
#include "coapgw_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "net_tls.h"
#include "util.h"

/* A DTLS/TLS-PSK handshake: the identity's key from coap.psk_file, or NULL
 * (the handshake fails). */
static const coap_bin_const_t *on_psk_identity(coap_bin_const_t *identity, coap_session_t *s,
                                               void *arg)
{
    (void)s;
    coapgw_t *g = arg;
    size_t klen = 0;
    const uint8_t *key = coapgw_psk_find(g->psk, identity->s, identity->length, &klen);
    if (key == NULL) {
        atomic_fetch_add(&g->refused, 1);
        return NULL;
    }
    g->psk_out.s = key;
    g->psk_out.length = klen;
    return &g->psk_out;
}

/* A (D)TLS session that failed (its handshake: an unknown PSK identity, a
 * client certificate not trusted or missing): counted. */
static int on_event(coap_session_t *s, const coap_event_t ev)
{
    if (ev != COAP_EVENT_DTLS_ERROR)
        return 0;
    coapgw_t *g = coap_get_app_data(coap_session_get_context(s));
    if (g)
        atomic_fetch_add(&g->handshakes_failed, 1);
    return 0;
}

int coapgw_secure_user(coapgw_t *g, coap_session_t *s, char *buf, size_t size)
{
    coap_proto_t p = coap_session_get_proto(s);
    if (p != COAP_PROTO_DTLS && p != COAP_PROTO_TLS)
        return 0;
    const coap_bin_const_t *id = coap_session_get_psk_identity(s);
    if (id && id->length) {
        if (id->length >= size || memchr(id->s, 0, id->length))
            return -1;
        memcpy(buf, id->s, id->length);
        buf[id->length] = 0;
        return (int)id->length;
    }
    coap_tls_library_t lib = COAP_TLS_LIBRARY_NOTLS;
    SSL *ssl = coap_session_get_tls(s, &lib);
    if (ssl == NULL || lib != COAP_TLS_LIBRARY_OPENSSL || g->c->ca_file[0] == 0)
        return 0;
    if (SSL_get0_peer_certificate(ssl) == NULL)
        return 0;
    return tls_peer_username(ssl, g->c->cert_username, buf, size);
}

/* The socket of the UDP endpoint just made (libcoap does not expose it):
 * the datagram socket bound to its address, or -1. */
static int find_udp_fd(const char *bound)
{
    char host[64];
    unsigned port = 0;
    if (sscanf(bound, "%63[0-9.]:%u", host, &port) != 2)
        return -1;
    struct in_addr want;
    if (inet_pton(AF_INET, host, &want) != 1)
        return -1;
    /* a new descriptor is the lowest one free: a run of 1,024 closed ones
     * is past it */
    for (int fd = 3, closed = 0; fd < 65536 && closed < 1024; fd++) {
        int type = 0;
        socklen_t tl = sizeof(type);
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) {
            closed = errno == EBADF ? closed + 1 : 0;
            continue;
        }
        closed = 0;
        struct sockaddr_in a;
        socklen_t al = sizeof(a);
        if (type == SOCK_DGRAM && getsockname(fd, (struct sockaddr *)&a, &al) == 0 &&
            al == sizeof(a) && a.sin_family == AF_INET && ntohs(a.sin_port) == port &&
            a.sin_addr.s_addr == want.s_addr)
            return fd;
    }
    return -1;
}

/* One endpoint on bind:port; logs "coap: listening on NAME ADDR:PORT". */
static coap_endpoint_t *listen_one(coapgw_t *g, coap_proto_t proto, const char *name, uint32_t port)
{
    coap_address_t addr;
    coap_address_init(&addr);
    addr.addr.sin.sin_family = AF_INET;
    addr.addr.sin.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, g->c->bind, &addr.addr.sin.sin_addr);
    addr.size = sizeof(addr.addr.sin);
    coap_endpoint_t *ep = coap_new_endpoint(g->ctx, &addr, proto);
    if (ep == NULL) {
        log_error("coap: cannot listen on %s %s:%u", name, g->c->bind, port);
        return NULL;
    }
    const char *bound = coap_endpoint_str(ep); /* "127.0.0.1:5683 UDP" */
    log_info("coap: listening on %s %.*s", name, (int)strcspn(bound, " "), bound);
    return ep;
}

static int set_up_security(coapgw_t *g)
{
    const coapgw_conf_t *c = g->c;
    if (!coap_dtls_is_supported()) {
        log_error("coap: coap.psk_file or cert_file is set but libcoap has no DTLS");
        return -1;
    }
    if (c->psk_file[0]) {
        char err[300];
        g->psk = coapgw_psk_load(c->psk_file, err, sizeof(err));
        if (g->psk == NULL) {
            log_error("coap: psk_file: %s", err);
            return -1;
        }
        coap_dtls_spsk_t ps = {.version = COAP_DTLS_SPSK_SETUP_VERSION,
                               .validate_id_call_back = on_psk_identity,
                               .id_call_back_arg = g};
        if (!coap_context_set_psk2(g->ctx, &ps)) {
            log_error("coap: cannot set up DTLS-PSK");
            return -1;
        }
        log_info("coap: DTLS/TLS-PSK with %zu identities", coapgw_psk_count(g->psk));
    }
    if (c->cert_file[0]) {
        coap_dtls_pki_t pki;
        memset(&pki, 0, sizeof(pki));
        pki.version = COAP_DTLS_PKI_SETUP_VERSION;
        pki.verify_peer_cert = c->ca_file[0] != 0;
        pki.check_common_ca = c->ca_file[0] != 0;
        pki.cert_chain_validation = 1;
        pki.cert_chain_verify_depth = 4;
        pki.allow_bad_md_hash = 0;
        pki.allow_short_rsa_length = 0;
        pki.pki_key.key_type = COAP_PKI_KEY_PEM;
        pki.pki_key.key.pem.public_cert = c->cert_file;
        pki.pki_key.key.pem.private_key = c->key_file;
        pki.pki_key.key.pem.ca_file = c->ca_file[0] ? c->ca_file : NULL;
        if (!coap_context_set_pki(g->ctx, &pki)) {
            log_error("coap: cannot set up certificates (cert_file %s, key_file %s)", c->cert_file,
                      c->key_file);
            return -1;
        }
        log_info("coap: certificates: %s%s", c->cert_file,
                 c->ca_file[0] ? ", client certificates required" : "");
    }
    return 0;
}

int coapgw_listen(coapgw_t *g)
{
    const coapgw_conf_t *c = g->c;
    coap_endpoint_t *ep = listen_one(g, COAP_PROTO_UDP, "udp", c->port);
    if (ep == NULL)
        return -1;
    g->udp_fd = find_udp_fd(coap_endpoint_str(ep));
    if (g->udp_fd < 0)
        log_warn("coap: the UDP socket was not found: /cmd acknowledges QoS 1/2 at the hand-off "
                 "to libcoap, not at the device's ACK");
    int secure = c->psk_file[0] || c->cert_file[0];
    if (secure)
        coap_register_event_handler(g->ctx, on_event);
    if (secure && (set_up_security(g) < 0 || !listen_one(g, COAP_PROTO_DTLS, "dtls", c->dtls_port)))
        return -1;
    if (!c->tcp)
        return 0;
    if (!coap_tcp_is_supported()) {
        log_error("coap: coap.tcp is true but libcoap has no TCP");
        return -1;
    }
    if (!listen_one(g, COAP_PROTO_TCP, "tcp", c->tcp_port))
        return -1;
    if (secure) {
        if (!coap_tls_is_supported()) {
            log_error("coap: coap.tcp with psk_file or cert_file, but libcoap has no TLS");
            return -1;
        }
        if (!listen_one(g, COAP_PROTO_TLS, "tls", c->tls_port))
            return -1;
    }
    return 0;
}

int coapgw_sec_check(conf_sec_t *s, const coapgw_conf_t *c)
{
    char err[400];
    if (c->psk_file[0]) {
        coapgw_psk_t *t = coapgw_psk_load(c->psk_file, err, sizeof(err));
        if (t == NULL)
            return conf_sec_fail(s, "psk_file", "%s", err);
        coapgw_psk_free(t);
    }
    if (c->key_file[0] && !c->cert_file[0])
        return conf_sec_fail(s, "cert_file", "key_file is set: cert_file is needed too");
    if (c->ca_file[0] && !c->cert_file[0])
        return conf_sec_fail(s, "cert_file", "ca_file is set: cert_file and key_file are needed");
    if (!c->cert_file[0])
        return 0;
    if (!c->key_file[0])
        return conf_sec_fail(s, "key_file", "cert_file is set: key_file is needed too");
    /* the files as the MQTT listeners read them: the same readable errors */
    conf_listener_t l;
    memset(&l, 0, sizeof(l));
    snprintf(l.name, sizeof(l.name), "coap");
    snprintf(l.cert_file, sizeof(l.cert_file), "%s", c->cert_file);
    snprintf(l.key_file, sizeof(l.key_file), "%s", c->key_file);
    snprintf(l.ca_file, sizeof(l.ca_file), "%s", c->ca_file);
    snprintf(l.ciphers, sizeof(l.ciphers), "%s", CONF_DEFAULT_CIPHERS);
    struct ssl_ctx_st *ctx = tls_ctx_new(&l, err, sizeof(err));
    if (ctx == NULL) {
        const char *key = strstr(err, "key_file")  ? "key_file"
                          : strstr(err, "ca_file") ? "ca_file"
                                                   : "cert_file";
        const char *why = strncmp(err, "listener coap: ", 15) == 0 ? err + 15 : err;
        return conf_sec_fail(s, key, "%s", why);
    }
    tls_ctx_free(ctx);
    return 0;
}
