/* coapgw_psk.h -- the CoAP gateway's DTLS pre-shared keys (coap.psk_file).
 *
 * A DTLS-PSK handshake needs the key itself on the server (the auth chain
 * only verifies secrets, it cannot hand one out), so the keys of the DTLS
 * listener come from a file of `identity:key` lines ('#' comments, blank
 * lines skipped; the key is the text after the first ':', or hex digits
 * after "hex:").  Loaded once at start (conf_load checks it, naming the
 * line); read-only afterwards, looked up by the gateway thread during a
 * handshake.
 */
#ifndef ANTENNA_COAPGW_PSK_H
#define ANTENNA_COAPGW_PSK_H

#include <stddef.h>
#include <stdint.h>

typedef struct coapgw_psk_s coapgw_psk_t;

/* NULL with err ("line N: why", or the file's error) on a bad file. */
coapgw_psk_t *coapgw_psk_load(const char *path, char *err, size_t errlen);
/* The key of identity (len bytes), or NULL; *klen its length.  The key
 * stays valid until coapgw_psk_free. */
const uint8_t *coapgw_psk_find(const coapgw_psk_t *t, const uint8_t *id, size_t len, size_t *klen);
size_t coapgw_psk_count(const coapgw_psk_t *t);
void coapgw_psk_free(coapgw_psk_t *t);

#endif
