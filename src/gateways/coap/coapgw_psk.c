/* coapgw_psk.c -- the DTLS pre-shared key table of the CoAP gateway.
 *
 * Owns an array of (identity, key) entries sorted by identity, looked up
 * by binary search (once per DTLS handshake, on the gateway thread).  Built
 * by the main thread at start, never changed afterwards.
 */
#include "coapgw_psk.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define PSK_MAX_ID 128
#define PSK_MAX_KEY 64

typedef struct {
    uint8_t id[PSK_MAX_ID];
    uint8_t key[PSK_MAX_KEY];
    uint8_t idlen, keylen;
} psk_entry_t;

struct coapgw_psk_s {
    psk_entry_t *e;
    size_t n;
};

static int entry_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    return c ? c : (alen > blen) - (alen < blen);
}

static int sort_cmp(const void *a, const void *b)
{
    const psk_entry_t *x = a, *y = b;
    return entry_cmp(x->id, x->idlen, y->id, y->idlen);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

coapgw_psk_t *coapgw_psk_load(const char *path, char *err, size_t errlen)
{
    coapgw_psk_t *t = an_calloc(1, sizeof(*t));
    size_t cap = 0;
    char line[1024];
    unsigned ln = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    while (fgets(line, sizeof(line), f)) {
        ln++;
        size_t l = strlen(line);
        if (l == sizeof(line) - 1 && line[l - 1] != '\n') {
            snprintf(err, errlen, "line %u: too long", ln);
            goto fail;
        }
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            line[--l] = 0;
        if (l == 0 || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (colon == NULL || colon == line) {
            snprintf(err, errlen, "line %u: expected identity:key", ln);
            goto fail;
        }
        size_t idlen = (size_t)(colon - line);
        const char *k = colon + 1;
        if (idlen > PSK_MAX_ID) {
            snprintf(err, errlen, "line %u: the identity is longer than %d bytes", ln, PSK_MAX_ID);
            goto fail;
        }
        if (t->n == cap) {
            cap = cap ? cap * 2 : 16;
            t->e = an_realloc(t->e, cap * sizeof(*t->e));
        }
        psk_entry_t *e = &t->e[t->n];
        memset(e, 0, sizeof(*e));
        memcpy(e->id, line, idlen);
        e->idlen = (uint8_t)idlen;
        size_t kl = 0;
        if (strncmp(k, "hex:", 4) == 0) {
            k += 4;
            size_t hl = strlen(k);
            if (hl == 0 || hl % 2 || hl / 2 > PSK_MAX_KEY) {
                snprintf(err, errlen, "line %u: hex: needs 2 to %d hex digits", ln,
                         2 * PSK_MAX_KEY);
                goto fail;
            }
            for (size_t i = 0; i < hl; i += 2) {
                int hi = hexval(k[i]), lo = hexval(k[i + 1]);
                if (hi < 0 || lo < 0) {
                    snprintf(err, errlen, "line %u: not a hex digit", ln);
                    goto fail;
                }
                e->key[kl++] = (uint8_t)(hi << 4 | lo);
            }
        } else {
            kl = strlen(k);
            if (kl == 0 || kl > PSK_MAX_KEY) {
                snprintf(err, errlen, "line %u: the key must be 1 to %d bytes", ln, PSK_MAX_KEY);
                goto fail;
            }
            memcpy(e->key, k, kl);
        }
        e->keylen = (uint8_t)kl;
        t->n++;
    }
    fclose(f);
    f = NULL;
    qsort(t->e, t->n, sizeof(*t->e), sort_cmp);
    for (size_t i = 1; i < t->n; i++)
        if (sort_cmp(&t->e[i - 1], &t->e[i]) == 0) {
            snprintf(err, errlen, "identity \"%.*s\" is given twice", (int)t->e[i].idlen,
                     (const char *)t->e[i].id);
            goto fail;
        }
    return t;
fail:
    if (f)
        fclose(f);
    coapgw_psk_free(t);
    return NULL;
}

const uint8_t *coapgw_psk_find(const coapgw_psk_t *t, const uint8_t *id, size_t len, size_t *klen)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = entry_cmp(t->e[mid].id, t->e[mid].idlen, id, len);
        if (c == 0) {
            *klen = t->e[mid].keylen;
            return t->e[mid].key;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t coapgw_psk_count(const coapgw_psk_t *t)
{
    return t->n;
}

void coapgw_psk_free(coapgw_psk_t *t)
{
    if (t == NULL)
        return;
    if (t->e)
        memset(t->e, 0, t->n * sizeof(*t->e)); /* the keys */
    free(t->e);
    free(t);
}
