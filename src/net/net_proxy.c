/* net_proxy.c -- PROXY protocol v1/v2 header parser; see net_proxy.h. */
#include "net_proxy.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int bad(const char **why, const char *reason)
{
    *why = reason;
    return -1;
}

/* A decimal port: 1..5 digits, no leading zero, <= 65535. */
static int parse_port(const char *s, uint16_t *out)
{
    size_t len = strlen(s);
    if (len == 0 || len > 5 || (len > 1 && s[0] == '0'))
        return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

static int parse_v1(const uint8_t *buf, size_t n, proxy_result_t *r, const char **why)
{
    static const char prefix[] = "PROXY ";
    size_t plen = sizeof(prefix) - 1;
    if (memcmp(buf, prefix, n < plen ? n : plen) != 0)
        return bad(why, "v1: the header does not start with \"PROXY \"");
    size_t end = 0; /* index of '\n' */
    for (size_t i = 0; i < n && i < PROXY_V1_MAX; i++) {
        if (buf[i] == '\n')
            return bad(why, "v1: line feed without carriage return");
        if (buf[i] == '\r') {
            if (i + 2 > PROXY_V1_MAX)
                return bad(why, "v1: header longer than 107 bytes");
            if (i + 1 == n)
                return 0; /* the line feed has yet to come */
            if (buf[i + 1] != '\n')
                return bad(why, "v1: carriage return without line feed");
            end = i + 1;
            break;
        }
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return bad(why, "v1: a character that is not printable ASCII");
    }
    if (end == 0)
        return n < PROXY_V1_MAX ? 0 : bad(why, "v1: header longer than 107 bytes");

    char line[PROXY_V1_MAX + 1];
    memcpy(line, buf, end - 1);
    line[end - 1] = '\0'; /* without "\r\n" */
    memset(r, 0, sizeof(*r));
    r->version = 1;
    const char *proto = line + plen;
    if (strncmp(proto, "UNKNOWN", 7) == 0 && (proto[7] == '\0' || proto[7] == ' ')) {
        r->local = 1; /* the rest of the line is ignored [spec 2.1] */
        return (int)(end + 1);
    }
    char *tok[6];
    int ntok = 0;
    char *p = line + plen;
    while (ntok < 6) {
        tok[ntok++] = p;
        char *sp = strchr(p, ' ');
        if (sp == NULL)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    if (ntok != 5 || strchr(tok[4], ' ') != NULL)
        return bad(why, "v1: expected \"PROXY TCP4|TCP6 src dst sport dport\"");
    int af;
    if (strcmp(tok[0], "TCP4") == 0)
        af = AF_INET;
    else if (strcmp(tok[0], "TCP6") == 0)
        af = AF_INET6;
    else
        return bad(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
    if (inet_pton(af, tok[1], r->src) != 1 || inet_pton(af, tok[2], r->dst) != 1)
        return bad(why, "v1: bad address for the protocol");
    if (parse_port(tok[3], &r->src_port) < 0 || parse_port(tok[4], &r->dst_port) < 0)
        return bad(why, "v1: bad port");
    r->family = (uint8_t)af;
    return (int)(end + 1);
}

static int parse_v2(const uint8_t *buf, size_t n, proxy_result_t *r, const char **why)
{
    if (memcmp(buf, v2_sig, n < 12 ? n : 12) != 0)
        return bad(why, "v2: bad signature");
    if (n < 13)
        return 0;
    uint8_t ver = buf[12] >> 4, cmd = buf[12] & 0xf;
    if (ver != 2)
        return bad(why, "v2: version is not 2");
    if (cmd > 1)
        return bad(why, "v2: command is not LOCAL or PROXY");
    if (n < 14)
        return 0;
    uint8_t fam = buf[13] >> 4, trans = buf[13] & 0xf;
    if (fam > 3 || trans > 2)
        return bad(why, "v2: unknown address family or transport");
    if (n < 16)
        return 0;
    size_t len = ((size_t)buf[14] << 8) | buf[15];
    if (16 + len > PROXY_MAX_HEADER)
        return bad(why, "v2: header larger than 4096 bytes");
    memset(r, 0, sizeof(*r));
    r->version = 2;
    if (cmd == 1) { /* PROXY: the address block must fit its family */
        size_t need = fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
        if (len < need)
            return bad(why, "v2: address block shorter than its family needs");
        if (fam != 0 && trans != 1)
            return bad(why, "v2: transport is not STREAM");
    }
    if (n < 16 + len)
        return 0;
    if (cmd == 0 || fam == 0 || fam == 3) {
        r->local = 1; /* LOCAL (health checks), UNSPEC, UNIX: socket address */
        return (int)(16 + len);
    }
    const uint8_t *a = buf + 16;
    size_t alen = fam == 1 ? 4 : 16;
    r->family = fam == 1 ? AF_INET : AF_INET6;
    memcpy(r->src, a, alen);
    memcpy(r->dst, a + alen, alen);
    r->src_port = (uint16_t)((a[2 * alen] << 8) | a[2 * alen + 1]);
    r->dst_port = (uint16_t)((a[2 * alen + 2] << 8) | a[2 * alen + 3]);
    return (int)(16 + len);
}

int proxy_parse(const uint8_t *buf, size_t n, int version, proxy_result_t *r, const char **why)
{
    *why = NULL;
    if (n == 0)
        return 0;
    if (buf[0] == 'P' && version != 2)
        return parse_v1(buf, n, r, why);
    if (buf[0] == 0x0D && version != 1)
        return parse_v2(buf, n, r, why);
    return bad(why, version == 1   ? "no PROXY v1 header"
                    : version == 2 ? "no PROXY v2 header"
                                   : "no PROXY header");
}
