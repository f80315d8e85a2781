/* coapgw.h -- the CoAP gateway (section coap), on libcoap3.
 *
 * A module (module.h): constrained devices publish with POST/PUT to
 * /ps/{topic} and subscribe with GET + Observe on /ps/{filter} over UDP;
 * an observation of /cmd attaches the device to its session (the downlink,
 * coapgw_down.c).
 * See coapgw.c for the design and docs/coap.md for the contract.
 */
#ifndef ANTENNA_COAPGW_H
#define ANTENNA_COAPGW_H

#include <stdint.h>

#include "module.h"

#define COAPGW_MAX_SUBS 8

typedef struct coapgw_conf_s {
    uint8_t enabled;
    uint8_t confirmable; /* notifications as CON (else NON) */
    char bind[64];
    uint32_t port;               /* UDP; 0: any free port (logged) */
    uint32_t max_body;           /* bytes of one request's payload (4.13 above) */
    uint32_t max_observers;      /* observations held at once (5.03 above) */
    uint32_t max_idle_sessions;  /* libcoap's per-address sessions without an
                                  * observation: past it the oldest goes */
    uint32_t observe_lifetime_s; /* an observation not refreshed is dropped */
    uint32_t timeout_ms;         /* wait for the auth chain, and for the
                                  * worker routing a QoS 1 message */
    char psk_file[256];          /* DTLS-PSK keys (coapgw_psk.h); "": no DTLS */
    uint32_t dtls_port;          /* the DTLS listener's UDP port; 0: any */
    char cert_file[256];         /* PEM certificate (chain) of (D)TLS; "": PSK only */
    char key_file[256];          /* its private key */
    char ca_file[256];           /* client certificates must chain to it; "": none asked */
    uint8_t cert_username;       /* CONF_CERT_USER_CN or _SAN: the user of a certificate */
    uint8_t tcp;                 /* CoAP over TCP (and TLS) listeners, RFC 8323 */
    uint32_t tcp_port, tls_port; /* 0: any free port */
    uint32_t rate;               /* requests per second per source address
                                  * (4.29 above), 0: no limit */
    /* the downlink (coapgw_down.c): an observation of /cmd is a session */
    uint32_t session_expiry;         /* seconds the device's session outlives it */
    uint32_t nsubs;                  /* the session's subscriptions */
    char subs[COAPGW_MAX_SUBS][256]; /* "{id}": the device id */
} coapgw_conf_t;

extern const module_t coapgw_module;

#endif
