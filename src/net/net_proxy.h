/* net_proxy.h -- PROXY protocol v1 and v2 header parser (HAProxy's spec,
 * https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt).
 *
 * Pure: bytes in, result out; no I/O, no allocation, no state between
 * calls.  The caller feeds the bytes received so far from the start of the
 * connection.  The parser never looks past the end of the header, so when
 * it answers "need more", every byte it was given belongs to the header and
 * the caller may consume them all (the rest of the connection -- MQTT or a
 * TLS handshake -- stays untouched).  Parsing is strict: v1 is exactly
 * "PROXY TCP4|TCP6 src dst sport dport\r\n" (single spaces, canonical
 * addresses, ports 0..65535 without leading zeros) or "PROXY UNKNOWN...\r\n",
 * 107 bytes at most; v2 needs the 12-byte signature, version 2, command
 * LOCAL or PROXY, a STREAM (or UNSPEC) transport and an address block as
 * long as its family needs; headers over PROXY_MAX_HEADER bytes (TLVs
 * included) are refused.  Used by conn.c and the fuzz target.
 */
#ifndef ANTENNA_NET_PROXY_H
#define ANTENNA_NET_PROXY_H

#include <stddef.h>
#include <stdint.h>

#define PROXY_V1_MAX 107
#define PROXY_MAX_HEADER 4096

typedef struct {
    uint8_t version; /* 1 or 2 */
    uint8_t local;   /* 1: no usable source (v1 UNKNOWN, v2 LOCAL, UNSPEC or
                       * UNIX): keep the socket's addresses */
    uint8_t family;  /* AF_INET or AF_INET6 when !local */
    uint8_t src[16]; /* network order; IPv4 in the first 4 bytes */
    uint8_t dst[16];
    uint16_t src_port, dst_port; /* host order */
} proxy_result_t;

/* Parse the header at the start of buf[0..n).  `version` is the one the
 * listener expects: 1, 2, or 0 for either.  Returns the header's length
 * (> 0) with *r filled, 0 when more bytes are needed (all n bytes are a
 * valid prefix), or -1 with *why set to a static reason. */
int proxy_parse(const uint8_t *buf, size_t n, int version, proxy_result_t *r, const char **why);

#endif
