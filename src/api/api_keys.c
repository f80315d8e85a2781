/* api_keys.c -- API keys (stored as SHA-256) and basic-auth users for the
 * management API (see api_keys.h).
 *
 * Keys are compared by hashing the presented key once and comparing the
 * digest with each stored one in constant time (CRYPTO_memcmp): the cost is
 * one SHA-256 per request, whatever the number of keys.  Passwords are
 * PBKDF2-HMAC-SHA512 as in mosquitto's password files.  Loaded by the main
 * thread; read-only afterwards, so the API threads read it without locks.
 *
 * A users file line hashed with fewer iterations than
 * api.min_password_iterations is refused at load: mosquitto_passwd 2.0
 * writes 101 (and has no option for more), which makes a stolen file cheap
 * to brute-force for an administrator's credential.  The error names the
 * file, the line and the two ways out (`antenna apikey passwd` hashes
 * again with API_PASSWD_ITERATIONS; or lower the minimum knowingly).
 */
#include "api_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "auth_passwd.h"
#include "b64.h"
#include "util.h"

typedef struct {
    char name[64];
    int is_user;
    unsigned char digest[64]; /* key: SHA-256 (32); user: PBKDF2 output (64),
                               * or SCRAM's StoredKey when `scram` */
    unsigned char salt[64];
    size_t salt_len;
    unsigned iterations;
    int scram; /* an `antenna passwd` line ($scram-sha-512$) */
} cred_t;

struct api_creds {
    cred_t *v;
    size_t n;
    cred_t dummy; /* checked for an unknown user: the same PBKDF2 cost */
};

static void hex(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex(const char *s, unsigned char *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = s[2 * i + (size_t)j];
            v <<= 4;
            if (ch >= '0' && ch <= '9')
                v |= (unsigned)(ch - '0');
            else if (ch >= 'a' && ch <= 'f')
                v |= (unsigned)(ch - 'a' + 10);
            else if (ch >= 'A' && ch <= 'F')
                v |= (unsigned)(ch - 'A' + 10);
            else
                return -1;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

static int name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (name[i] == ':' || name[i] == '\n' || name[i] == '\r' || name[i] == '#' ||
            (unsigned char)name[i] < 0x20)
            return 0;
    return 1;
}

int api_keys_create(const char *file, const char *name, char *out, char *err, size_t errlen)
{
    if (!name_valid(name)) {
        snprintf(err, errlen, "bad key name '%s' (1..63 characters, no ':' or '#')", name);
        return -1;
    }
    unsigned char raw[32], digest[32];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        snprintf(err, errlen, "no random bytes (OpenSSL RAND_bytes failed)");
        return -1;
    }
    memcpy(out, "ak_", 3);
    hex(raw, sizeof(raw), out + 3);
    sha256(out, API_KEY_LEN, digest);
    char line[64 + 1 + 64 + 2];
    char dhex[65];
    hex(digest, sizeof(digest), dhex);
    int len = snprintf(line, sizeof(line), "%s:%s\n", name, dhex);
    int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", file, strerror(errno));
        return -1;
    }
    if (write(fd, line, (size_t)len) != len) {
        snprintf(err, errlen, "cannot write %s: %s", file, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static void add(api_creds_t *c, const cred_t *cr)
{
    c->v = an_realloc(c->v, (c->n + 1) * sizeof(*c->v));
    c->v[c->n++] = *cr;
}

/* A password line's hash into cr: mosquitto_passwd's "$7$ITER$SALT$HASH"
 * (what `antenna apikey passwd` writes) or any format of the broker's
 * password file (`antenna passwd`), so one file can serve both. */
static int parse_pbkdf2(const char *h, cred_t *cr)
{
    auth_passwd_rec_t rec;
    if (auth_passwd_decode(h, &rec, NULL) < 0 || rec.salt_len > sizeof(cr->salt))
        return -1;
    memcpy(cr->salt, rec.salt, rec.salt_len);
    cr->salt_len = rec.salt_len;
    memcpy(cr->digest, rec.key, sizeof(cr->digest));
    cr->iterations = rec.iterations;
    cr->scram = rec.kind == AUTH_PASSWD_SCRAM;
    OPENSSL_cleanse(&rec, sizeof(rec));
    return 0;
}

static int load_file(api_creds_t *c, const char *path, int users, unsigned min_iterations,
                     char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        cred_t cr;
        memset(&cr, 0, sizeof(cr));
        cr.is_user = users;
        if (colon)
            *colon = '\0';
        if (colon == NULL || !name_valid(line) ||
            (users ? parse_pbkdf2(colon + 1, &cr) : unhex(colon + 1, cr.digest, 32)) < 0) {
            snprintf(err, errlen, "%s:%d: expected NAME:%s", path, lineno,
                     users ? "$7$ITERATIONS$SALT$HASH (or an antenna passwd line)" : "SHA256HEX");
            rc = -1;
            break;
        }
        if (users && cr.iterations < min_iterations) {
            snprintf(err, errlen,
                     "%s:%d: user '%s' is hashed with %u PBKDF2 iterations, fewer than "
                     "api.min_password_iterations (%u); mosquitto_passwd 2.0 writes 101: hash "
                     "the password again with `antenna apikey passwd %s %s` (%u iterations), "
                     "or set api.min_password_iterations: %u to accept it",
                     path, lineno, line, cr.iterations, min_iterations, path, line,
                     API_PASSWD_ITERATIONS, cr.iterations);
            rc = -1;
            break;
        }
        memcpy(cr.name, line, strlen(line) + 1); /* name_valid: < 64 bytes */
        add(c, &cr);
    }
    fclose(f);
    return rc;
}

api_creds_t *api_creds_load(const char *keys_file, const char *users_file, unsigned min_iterations,
                            char *err, size_t errlen)
{
    api_creds_t *c = an_calloc(1, sizeof(*c));
    if (keys_file && keys_file[0] && load_file(c, keys_file, 0, 0, err, errlen) < 0)
        goto fail;
    if (users_file && users_file[0] && load_file(c, users_file, 1, min_iterations, err, errlen) < 0)
        goto fail;
    /* an unknown user costs what the first user costs (a random verifier
     * nobody matches), so the answer's timing does not tell who exists */
    c->dummy.is_user = 1;
    c->dummy.iterations = 101;
    c->dummy.salt_len = 16;
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].is_user) {
            c->dummy.iterations = c->v[i].iterations;
            c->dummy.salt_len = c->v[i].salt_len;
            break;
        }
    if (RAND_bytes(c->dummy.salt, sizeof(c->dummy.salt)) != 1 ||
        RAND_bytes(c->dummy.digest, sizeof(c->dummy.digest)) != 1) {
        snprintf(err, errlen, "no random bytes (OpenSSL RAND_bytes failed)");
        goto fail;
    }
    return c;
fail:
    api_creds_free(c);
    return NULL;
}

void api_creds_free(api_creds_t *c)
{
    if (c == NULL)
        return;
    OPENSSL_cleanse(c->v, c->n * sizeof(*c->v));
    free(c->v);
    free(c);
}

size_t api_creds_count(const api_creds_t *c)
{
    return c ? c->n : 0;
}

static const char *check_bearer(const api_creds_t *c, const char *key)
{
    unsigned char d[32];
    sha256(key, strlen(key), d);
    const char *who = NULL;
    for (size_t i = 0; i < c->n; i++)
        if (!c->v[i].is_user && CRYPTO_memcmp(d, c->v[i].digest, 32) == 0)
            who = c->v[i].name;
    return who;
}

static const char *check_basic(const api_creds_t *c, const char *b64)
{
    unsigned char buf[512];
    const char *who = NULL;
    /* buf holds the password, also after a refusal part way through */
    long n = b64_decode(b64, strlen(b64), buf, sizeof(buf) - 1);
    char *colon = n > 0 ? memchr(buf, ':', (size_t)n) : NULL;
    if (colon == NULL)
        goto out;
    buf[n] = '\0';
    *colon = '\0';
    const char *user = (const char *)buf, *pw = colon + 1;
    size_t pwlen = (size_t)n - (size_t)(colon + 1 - (char *)buf);
    const cred_t *cr = NULL;
    for (size_t i = 0; i < c->n && cr == NULL; i++)
        if (c->v[i].is_user && strcmp(c->v[i].name, user) == 0)
            cr = &c->v[i];
    /* one PBKDF2 whether the user exists or not (issue 13 item 11) */
    const cred_t *check = cr ? cr : &c->dummy;
    unsigned char got[64], stored[64], server[64];
    if (PKCS5_PBKDF2_HMAC(pw, (int)pwlen, check->salt, (int)check->salt_len, (int)check->iterations,
                          EVP_sha512(), 64, got) == 1) {
        if (check->scram) { /* compare StoredKey, as the broker does */
            auth_passwd_scram_keys(got, stored, server);
            memcpy(got, stored, sizeof(got));
        }
        if (CRYPTO_memcmp(got, check->digest, 64) == 0 && cr)
            who = cr->name;
    }
    OPENSSL_cleanse(got, sizeof(got));
    OPENSSL_cleanse(stored, sizeof(stored));
out:
    OPENSSL_cleanse(buf, sizeof(buf));
    return who;
}

const char *api_creds_check(const api_creds_t *c, const char *authorization)
{
    if (c == NULL || authorization == NULL)
        return NULL;
    if (strncasecmp(authorization, "Bearer ", 7) == 0)
        return check_bearer(c, authorization + 7);
    if (strncasecmp(authorization, "Basic ", 6) == 0)
        return check_basic(c, authorization + 6);
    return NULL;
}

/* "NAME:$7$ITER$SALT$HASH\n" for password pw into out: 0, or -1. */
static int user_line(const char *name, const char *pw, unsigned iterations, char *out,
                     size_t outlen)
{
    unsigned char salt[12], dk[64];
    char s64[B64_ENCODED_LEN(sizeof(salt)) + 1], d64[B64_ENCODED_LEN(sizeof(dk)) + 1];
    if (RAND_bytes(salt, sizeof(salt)) != 1 ||
        PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, sizeof(salt), (int)iterations, EVP_sha512(),
                          sizeof(dk), dk) != 1)
        return -1;
    b64_encode(salt, sizeof(salt), s64);
    b64_encode(dk, sizeof(dk), d64);
    OPENSSL_cleanse(dk, sizeof(dk));
    int n = snprintf(out, outlen, "%s:$7$%u$%s$%s\n", name, iterations, s64, d64);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* Replace NAME's line of FILE (or append one), through FILE.tmp renamed
 * over FILE (mode 0600): 0, or -1 with err set. */
static int users_put(const char *file, const char *name, const char *line, char *err, size_t errlen)
{
    char tmp[4096], buf[1024];
    snprintf(tmp, sizeof(tmp), "%s.tmp", file);
    FILE *in = fopen(file, "r"), *out = NULL;
    int fd = -1, rc = -1;
    if (in == NULL && errno != ENOENT) {
        snprintf(err, errlen, "cannot open %s: %s", file, strerror(errno));
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (out = fdopen(fd, "w")) == NULL) {
        snprintf(err, errlen, "cannot write %s.tmp: %s", file, strerror(errno));
        goto out;
    }
    fd = -1;
    size_t nl = strlen(name);
    int replaced = 0;
    while (in && fgets(buf, sizeof(buf), in)) {
        if (strncmp(buf, name, nl) == 0 && buf[nl] == ':') {
            if (!replaced)
                fputs(line, out);
            replaced = 1;
        } else {
            fputs(buf, out);
        }
    }
    if (!replaced)
        fputs(line, out);
    if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0) {
        out = NULL;
        snprintf(err, errlen, "cannot write %s.tmp: %s", file, strerror(errno));
        goto out;
    }
    out = NULL;
    if (rename(tmp, file) != 0) {
        snprintf(err, errlen, "cannot rename %s.tmp to %s: %s", file, file, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* One line of stdin (a terminal: asked for, without echo) into pw. */
static int read_password(char *pw, size_t size)
{
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "Password: ");
        tcgetattr(STDIN_FILENO, &old);
        quiet = old;
        quiet.c_lflag &= (tcflag_t)~ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *ok = fgets(pw, (int)size, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (ok == NULL)
        return -1;
    pw[strcspn(pw, "\r\n")] = '\0';
    return 0;
}

/* `antenna apikey passwd [-i ITERATIONS] FILE NAME` */
static int passwd_cli(int argc, char **argv)
{
    unsigned long iterations = API_PASSWD_ITERATIONS;
    int a = 2;
    if (argc >= 4 && strcmp(argv[a], "-i") == 0) {
        char *end;
        iterations = strtoul(argv[a + 1], &end, 10);
        if (*argv[a + 1] == '\0' || *end || iterations < 1000 || iterations > 10000000) {
            fprintf(stderr, "antenna apikey passwd: -i: iterations from 1000 to 10000000\n");
            return 2;
        }
        a += 2;
    }
    if (argc - a != 2) {
        fprintf(stderr, "usage: antenna apikey passwd [-i ITERATIONS] FILE NAME\n");
        return 2;
    }
    const char *file = argv[a], *name = argv[a + 1];
    if (!name_valid(name)) {
        fprintf(stderr,
                "antenna apikey passwd: bad user name '%s' (1..63 characters, no ':' "
                "or '#')\n",
                name);
        return 2;
    }
    char pw[1024], line[64 + 256], err[512];
    int rc = 1;
    if (read_password(pw, sizeof(pw)) < 0 || pw[0] == '\0') {
        fprintf(stderr, "antenna apikey passwd: no password read\n");
        goto out;
    }
    if (user_line(name, pw, (unsigned)iterations, line, sizeof(line)) < 0) {
        fprintf(stderr, "antenna apikey passwd: hashing failed\n");
        goto out;
    }
    if (users_put(file, name, line, err, sizeof(err)) < 0) {
        fprintf(stderr, "antenna apikey passwd: %s\n", err);
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(pw, sizeof(pw));
    OPENSSL_cleanse(line, sizeof(line));
    return rc;
}

int api_keys_cli(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("Usage: antenna apikey create FILE NAME\n"
               "       antenna apikey passwd [-i ITERATIONS] FILE NAME\n"
               "  create: create an API key for the management API: append NAME and the\n"
               "  key's SHA-256 to FILE (api.keys_file; created with mode 0600) and print\n"
               "  the key once on stdout.  SIGHUP makes a running broker re-read FILE.\n"
               "  passwd: add or replace the basic-auth user NAME of FILE (api.users_file,\n"
               "  mode 0600), the password read from stdin (a terminal: asked for), hashed\n"
               "  with PBKDF2-SHA512 and %u iterations by default.\n",
               API_PASSWD_ITERATIONS);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "passwd") == 0)
        return passwd_cli(argc, argv);
    if (argc != 4 || strcmp(argv[1], "create") != 0) {
        fprintf(stderr, "usage: antenna apikey create FILE NAME\n"
                        "       antenna apikey passwd [-i ITERATIONS] FILE NAME\n");
        return 2;
    }
    char key[API_KEY_LEN + 1], err[512];
    if (api_keys_create(argv[2], argv[3], key, err, sizeof(err)) < 0) {
        fprintf(stderr, "antenna apikey: %s\n", err);
        return 1;
    }
    printf("%s\n", key);
    return 0;
}
