/* auth_scram.c -- SCRAM-SHA-512 (RFC 5802 with SHA-512, as RFC 7677 does
 * for SHA-256) as an MQTT 5 enhanced authentication method.
 *
 * The server side holds StoredKey and ServerKey only (the password file's
 * $scram-sha-512$ lines, auth_passwd.h), never SaltedPassword: the proof
 * is checked by recovering ClientKey = proof XOR HMAC(StoredKey,
 * AuthMessage) and comparing SHA512(ClientKey) with StoredKey, so knowing
 * the file is not enough to log in.  A user made by `antenna passwd` can
 * log in either way.  No channel binding (gs2 header "n,," or "y,,").
 * Exchange:
 *   CONNECT data   client-first  "n,,n=USER,r=CNONCE"
 *   AUTH 0x18      server-first  "r=CNONCE+SNONCE,s=SALT,i=ITER"
 *   AUTH 0x18      client-final  "c=biws,r=NONCE,p=PROOF"
 *   CONNACK        server-final  "v=SERVER_SIGNATURE"
 * An unknown user, or one whose line is in the older $pbkdf2-sha512$
 * format, gets a server-first like anyone's (a fake salt derived from the
 * user name, the usual iteration count) and fails at the proof: the
 * exchange does not tell which users exist.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_chain.h"
#include "auth_method.h"
#include "auth_passwd.h"
#include "b64.h"
#include "util.h"

#define DK AUTH_PASSWD_DK_LEN

struct auth_method_state {
    uint8_t stored[DK], server[DK]; /* StoredKey, ServerKey */
    uint8_t real;                   /* the user exists with a SCRAM verifier */
    char *user;
    char *client_first_bare;
    char *server_first;
    char nonce[160];
};

static void hmac(const uint8_t *key, size_t klen, const void *msg, size_t mlen, uint8_t *out)
{
    unsigned int n = DK;
    HMAC(EVP_sha512(), key, (int)klen, msg, mlen, out, &n);
}

/* SCRAM's saslname: "=2C" is ',' and "=3D" is '='; any other '=' is bad. */
static char *saslname(const char *p, size_t len)
{
    char *out = an_malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '=') {
            if (i + 2 < len + 0 && p[i + 1] == '2' && p[i + 2] == 'C')
                out[o++] = ',';
            else if (i + 2 < len + 0 && p[i + 1] == '3' && p[i + 2] == 'D')
                out[o++] = '=';
            else {
                free(out);
                return NULL;
            }
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
    return out;
}

static void state_free(auth_method_state_t *st)
{
    if (st == NULL)
        return;
    OPENSSL_cleanse(st->stored, sizeof(st->stored));
    OPENSSL_cleanse(st->server, sizeof(st->server));
    free(st->user);
    free(st->client_first_bare);
    free(st->server_first);
    free(st);
}

static auth_method_rc_t fail(auth_method_out_t *out, const char *why)
{
    out->why = why;
    return AUTH_METHOD_FAIL;
}

static auth_method_rc_t scram_start(struct auth_chain *ch, auth_method_state_t **stp,
                                    const uint8_t *in, size_t len, auth_method_out_t *out)
{
    auth_backend_t *pw = auth_chain_backend(ch, "password_file");
    char *msg = NULL;
    if (pw == NULL)
        return fail(out, "no password file");
    if (in == NULL || len < 8 || len > 1024 || memchr(in, 0, len))
        return fail(out, "bad client-first-message");
    msg = an_strndup((const char *)in, len);
    if (!(msg[0] == 'n' || msg[0] == 'y') || msg[1] != ',' || msg[2] != ',') {
        free(msg);
        return fail(out, "channel binding or an authzid is not supported");
    }
    const char *bare = msg + 3;
    if (strncmp(bare, "n=", 2) != 0) {
        free(msg);
        return fail(out, "client-first-message without n=");
    }
    const char *comma = strchr(bare + 2, ',');
    if (comma == NULL || strncmp(comma + 1, "r=", 2) != 0) {
        free(msg);
        return fail(out, "client-first-message without r=");
    }
    const char *cnonce = comma + 3;
    size_t cnlen = strcspn(cnonce, ",");
    if (cnlen == 0 || cnlen > 100) {
        free(msg);
        return fail(out, "bad client nonce");
    }
    for (size_t i = 0; i < cnlen; i++)
        if (cnonce[i] < 0x21 || cnonce[i] > 0x7e) {
            free(msg);
            return fail(out, "bad client nonce");
        }
    char *user = saslname(bare + 2, (size_t)(comma - bare - 2));
    if (user == NULL || user[0] == '\0') {
        free(user);
        free(msg);
        return fail(out, "bad user name");
    }
    auth_passwd_rec_t rec;
    auth_method_state_t *st = an_calloc(1, sizeof(*st));
    st->real = (uint8_t)auth_passwd_scram_record(pw, user, &rec);
    memcpy(st->stored, rec.key, DK);
    memcpy(st->server, rec.server_key, DK);
    const uint8_t *salt = rec.salt;
    size_t slen = rec.salt_len;
    uint32_t iter = rec.iterations;
    st->user = user;
    st->client_first_bare = an_strndup(bare, strlen(bare));
    uint8_t rnd[18];
    char snonce[B64_ENCODED_LEN(sizeof(rnd)) + 1];
    char salt64[B64_ENCODED_LEN(AUTH_PASSWD_SALT_MAX) + 1];
    RAND_bytes(rnd, sizeof(rnd));
    b64_encode(rnd, sizeof(rnd), snonce);
    b64_encode(salt, slen, salt64);
    snprintf(st->nonce, sizeof(st->nonce), "%.*s%s", (int)cnlen, cnonce, snonce);
    char sf[400];
    int n = snprintf(sf, sizeof(sf), "r=%s,s=%s,i=%u", st->nonce, salt64, iter);
    st->server_first = an_strndup(sf, (size_t)n);
    out->data = (uint8_t *)an_strndup(sf, (size_t)n);
    out->len = (size_t)n;
    free(msg);
    OPENSSL_cleanse(&rec, sizeof(rec));
    *stp = st;
    return AUTH_METHOD_CONTINUE;
}

static auth_method_rc_t scram_step(auth_method_state_t *st, const uint8_t *in, size_t len,
                                   auth_method_out_t *out)
{
    if (st->server_first == NULL)
        return fail(out, "unexpected message");
    if (in == NULL || len > 2048 || memchr(in, 0, len))
        return fail(out, "bad client-final-message");
    char *msg = an_strndup((const char *)in, len);
    auth_method_rc_t rc = AUTH_METHOD_FAIL;
    char *p = strstr(msg, ",p=");
    out->why = "bad client-final-message";
    if (p == NULL || (strncmp(msg, "c=biws,", 7) != 0 && strncmp(msg, "c=eSws,", 7) != 0))
        goto out;
    const char *r = msg + 7;
    size_t nlen = strlen(st->nonce);
    if (strncmp(r, "r=", 2) != 0 || strncmp(r + 2, st->nonce, nlen) != 0 || (r[2 + nlen] != ','))
        goto out;
    uint8_t proof[DK];
    if (b64_decode(p + 3, strlen(p + 3), proof, sizeof(proof)) != DK)
        goto out;
    *p = '\0'; /* msg is now client-final-message-without-proof */
    size_t alen = strlen(st->client_first_bare) + strlen(st->server_first) + strlen(msg) + 3;
    char *auth_msg = an_malloc(alen);
    int am = snprintf(auth_msg, alen, "%s,%s,%s", st->client_first_bare, st->server_first, msg);
    uint8_t client_key[DK], sig[DK], check[DK], server_sig[DK];
    hmac(st->stored, DK, auth_msg, (size_t)am, sig);
    for (size_t i = 0; i < DK; i++)
        client_key[i] = proof[i] ^ sig[i]; /* the client's ClientKey */
    SHA512(client_key, DK, check);
    OPENSSL_cleanse(client_key, sizeof(client_key));
    if (CRYPTO_memcmp(check, st->stored, DK) != 0 || !st->real) {
        out->why =
            st->real ? "wrong proof (bad password)" : "unknown user, or no SCRAM verifier for it";
        free(auth_msg);
        goto out;
    }
    hmac(st->server, DK, auth_msg, (size_t)am, server_sig);
    free(auth_msg);
    char v[2 + B64_ENCODED_LEN(DK) + 1];
    v[0] = 'v';
    v[1] = '=';
    b64_encode(server_sig, DK, v + 2);
    out->data = (uint8_t *)an_strndup(v, strlen(v));
    out->len = strlen(v);
    out->user = an_strndup(st->user, strlen(st->user));
    free(st->server_first);
    st->server_first = NULL;
    rc = AUTH_METHOD_SUCCESS;
out:
    if (rc == AUTH_METHOD_FAIL) /* the name tried: failures are counted per user */
        out->user = an_strndup(st->user, strlen(st->user));
    free(msg);
    return rc;
}

const auth_method_t auth_scram_sha512 = {
    .name = "SCRAM-SHA-512",
    .start = scram_start,
    .step = scram_step,
    .free = state_free,
};

const auth_method_t *auth_method_find(struct auth_chain *ch, const uint8_t *name, size_t len)
{
    static const auth_method_t *const methods[] = {&auth_scram_sha512};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i]->name) == len && memcmp(methods[i]->name, name, len) == 0) {
            if (methods[i] == &auth_scram_sha512 && auth_chain_backend(ch, "password_file") == NULL)
                return NULL; /* nothing to check it against */
            return methods[i];
        }
    return NULL;
}
