/* auth_passwd.c -- password file: hashing, loading, the backend, the CLI.
 *
 * Hashes are PBKDF2-HMAC-SHA512 (OpenSSL PKCS5_PBKDF2_HMAC) over a random
 * 16-byte salt (RAND_bytes); comparison is CRYPTO_memcmp.  The iteration
 * count is stored per line, so it can be raised without invalidating old
 * lines.  PBKDF2 makes each CONNECT cost what the iterations cost (see
 * docs/architecture.md, "Authentication", for the figures).
 *
 * The backend keeps the users in an array sorted by name (binary search),
 * replaced whole on reload: workers read it under a read lock, the main
 * thread swaps it under the write lock (SIGHUP).  PBKDF2 runs after the
 * lock is dropped, on a copy of the hash.
 */
#include "auth_passwd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "b64.h"
#include "log.h"
#include "util.h"

#define PREFIX "$pbkdf2-sha512$"
#define MAX_ITERATIONS 10000000u

/* ---- hash format ---- */

int auth_passwd_parse(const char *hash, uint32_t *iterations, uint8_t *salt, size_t *salt_len,
                      uint8_t dk[AUTH_PASSWD_DK_LEN], const char **why)
{
    const char *w = "not a $pbkdf2-sha512$ hash";
    if (strncmp(hash, PREFIX, strlen(PREFIX)) != 0)
        goto bad;
    const char *p = hash + strlen(PREFIX);
    char *end;
    errno = 0;
    unsigned long it = strtoul(p, &end, 10);
    w = "bad iteration count";
    if (end == p || *end != '$' || errno || it < 1 || it > MAX_ITERATIONS || *p == '0')
        goto bad;
    const char *s = end + 1, *d = strchr(s, '$');
    w = "missing hash";
    if (d == NULL)
        goto bad;
    uint8_t sbuf[64];
    long sl = b64_decode(s, (size_t)(d - s), sbuf, sizeof(sbuf));
    w = "bad salt (base64, 8 to 48 bytes)";
    if (sl < 8 || sl > 48)
        goto bad;
    uint8_t dbuf[AUTH_PASSWD_DK_LEN];
    long dl = b64_decode(d + 1, strlen(d + 1), dbuf, sizeof(dbuf));
    w = "bad hash (base64 of 64 bytes)";
    if (dl != AUTH_PASSWD_DK_LEN)
        goto bad;
    *iterations = (uint32_t)it;
    if (salt) {
        memcpy(salt, sbuf, (size_t)sl);
        *salt_len = (size_t)sl;
    }
    if (dk)
        memcpy(dk, dbuf, AUTH_PASSWD_DK_LEN);
    return 0;
bad:
    if (why)
        *why = w;
    return -1;
}

int auth_passwd_hash(const uint8_t *pw, size_t len, uint32_t iterations, char *out,
                     size_t outlen)
{
    uint8_t salt[AUTH_PASSWD_SALT_LEN], dk[AUTH_PASSWD_DK_LEN];
    char s64[B64_ENCODED_LEN(AUTH_PASSWD_SALT_LEN) + 1];
    char d64[B64_ENCODED_LEN(AUTH_PASSWD_DK_LEN) + 1];
    if (iterations < 1 || iterations > MAX_ITERATIONS)
        return -1;
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return -1;
    if (PKCS5_PBKDF2_HMAC((const char *)pw, (int)len, salt, sizeof(salt), (int)iterations,
                          EVP_sha512(), sizeof(dk), dk) != 1)
        return -1;
    b64_encode(salt, sizeof(salt), s64);
    b64_encode(dk, sizeof(dk), d64);
    int n = snprintf(out, outlen, PREFIX "%u$%s$%s", iterations, s64, d64);
    OPENSSL_cleanse(dk, sizeof(dk));
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

int auth_passwd_verify(const char *hash, const uint8_t *pw, size_t len)
{
    uint32_t it;
    uint8_t salt[64], want[AUTH_PASSWD_DK_LEN], got[AUTH_PASSWD_DK_LEN];
    size_t sl;
    if (auth_passwd_parse(hash, &it, salt, &sl, want, NULL) < 0)
        return -1;
    if (PKCS5_PBKDF2_HMAC((const char *)pw, (int)len, salt, (int)sl, (int)it, EVP_sha512(),
                          sizeof(got), got) != 1)
        return -1;
    int ok = CRYPTO_memcmp(want, got, sizeof(got)) == 0;
    OPENSSL_cleanse(got, sizeof(got));
    return ok;
}

/* ---- the file ---- */

typedef struct {
    char *user;
    char *hash;
} pw_entry_t;

typedef struct {
    pw_entry_t *v;
    size_t n;
} pw_table_t;

static void table_free(pw_table_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].user);
        free(t->v[i].hash);
    }
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const pw_entry_t *)a)->user, ((const pw_entry_t *)b)->user);
}

static int user_valid(const char *u, size_t len)
{
    if (len == 0 || len > 65535)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)u[i] < 0x20 || u[i] == ':' || u[i] == 0x7f)
            return 0;
    return 1;
}

/* Load `path`: 0, or -1 with err "PATH:LINE: problem" (t untouched). */
static int table_load(const char *path, pw_table_t *t, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    pw_table_t nt = {0};
    size_t cap = 0, lineno = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t got;
    int rc = -1;
    while ((got = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        if (strlen(line) != len) {
            snprintf(err, errlen, "%s:%zu: contains a NUL character", path, lineno);
            goto out;
        }
        char *colon = strchr(line, ':');
        if (colon == NULL) {
            snprintf(err, errlen, "%s:%zu: expected user:hash", path, lineno);
            goto out;
        }
        if (!user_valid(line, (size_t)(colon - line))) {
            snprintf(err, errlen, "%s:%zu: bad user name", path, lineno);
            goto out;
        }
        const char *why = NULL;
        uint32_t it;
        if (auth_passwd_parse(colon + 1, &it, NULL, NULL, NULL, &why) < 0) {
            snprintf(err, errlen, "%s:%zu: %s", path, lineno, why);
            goto out;
        }
        if (nt.n == cap) {
            cap = cap ? 2 * cap : 64;
            nt.v = an_realloc(nt.v, cap * sizeof(*nt.v));
        }
        nt.v[nt.n].user = an_strndup(line, (size_t)(colon - line));
        nt.v[nt.n].hash = an_strndup(colon + 1, strlen(colon + 1));
        nt.n++;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (nt.n)
        qsort(nt.v, nt.n, sizeof(*nt.v), entry_cmp);
    for (size_t i = 1; i < nt.n; i++)
        if (strcmp(nt.v[i - 1].user, nt.v[i].user) == 0) {
            snprintf(err, errlen, "%s: user '%s' is listed twice", path, nt.v[i].user);
            goto out;
        }
    *t = nt;
    nt.v = NULL;
    nt.n = 0;
    rc = 0;
out:
    table_free(&nt);
    free(line);
    fclose(f);
    return rc;
}

/* ---- the backend ---- */

typedef struct {
    auth_backend_t b;
    char path[256];
    pthread_rwlock_t lock;
    pw_table_t t;
} pw_backend_t;

int auth_passwd_lookup(auth_backend_t *b, const char *user, char *out, size_t outlen)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    int rc = -1;
    pthread_rwlock_rdlock(&pb->lock);
    pw_entry_t key = {.user = (char *)user};
    pw_entry_t *e = pb->t.n ? bsearch(&key, pb->t.v, pb->t.n, sizeof(key), entry_cmp) : NULL;
    if (e && strlen(e->hash) < outlen) {
        memcpy(out, e->hash, strlen(e->hash) + 1);
        rc = 0;
    }
    pthread_rwlock_unlock(&pb->lock);
    return rc;
}

static auth_verdict_t pw_check(auth_backend_t *b, const auth_request_t *r, auth_answer_t *out,
                               auth_done_fn done, void *token)
{
    (void)done;
    (void)token;
    char hash[AUTH_PASSWD_HASH_MAX];
    if (r->action != AUTH_ACT_CONNECT || r->username == NULL)
        return out->verdict = AUTH_PASS;
    if (auth_passwd_lookup(b, r->username, hash, sizeof(hash)) < 0)
        return out->verdict = AUTH_PASS; /* not ours: maybe the next backend's */
    int ok = r->password ? auth_passwd_verify(hash, r->password, r->password_len) : 0;
    if (ok == 1)
        return out->verdict = AUTH_ALLOW;
    out->reason = 0x86; /* bad user name or password */
    return out->verdict = AUTH_DENY;
}

static int pw_reload(auth_backend_t *b)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    pw_table_t nt, old;
    char err[512];
    if (table_load(pb->path, &nt, err, sizeof(err)) < 0) {
        log_error("password file not reloaded, the previous users stay: %s", err);
        return -1;
    }
    pthread_rwlock_wrlock(&pb->lock);
    old = pb->t;
    pb->t = nt;
    pthread_rwlock_unlock(&pb->lock);
    log_info("password file %s reloaded: %zu users", pb->path, nt.n);
    table_free(&old);
    return 0;
}

static void pw_destroy(auth_backend_t *b)
{
    pw_backend_t *pb = (pw_backend_t *)b;
    table_free(&pb->t);
    pthread_rwlock_destroy(&pb->lock);
    free(pb);
}

auth_backend_t *auth_passwd_new(const conf_t *conf, char *err, size_t errlen)
{
    const char *path = conf->auth.password_file;
    if (path[0] == '\0') {
        snprintf(err, errlen, "auth.password_file: required by the password_file backend");
        return NULL;
    }
    pw_table_t t;
    if (table_load(path, &t, err, errlen) < 0)
        return NULL;
    pw_backend_t *pb = an_calloc(1, sizeof(*pb));
    pb->b.name = "password_file";
    pb->b.check = pw_check;
    pb->b.reload = pw_reload;
    pb->b.destroy = pw_destroy;
    snprintf(pb->path, sizeof(pb->path), "%s", path);
    pthread_rwlock_init(&pb->lock, NULL);
    pb->t = t;
    log_info("password file %s: %zu users", path, t.n);
    return &pb->b;
}

/* ---- antenna passwd ---- */

static void cli_usage(FILE *out)
{
    fprintf(out,
            "Usage: antenna passwd [-i ITERATIONS] FILE USER      (password from the terminal "
            "or stdin)\n"
            "       antenna passwd -b [-i ITERATIONS] FILE USER PASSWORD\n"
            "       antenna passwd -D FILE USER\n"
            "\n"
            "Adds or replaces USER in FILE with a salted PBKDF2-SHA512 hash (the file is\n"
            "created, mode 0600, when missing); -D deletes USER.  Default iterations: %u.\n",
            AUTH_PASSWD_ITERATIONS);
}

/* A password from the terminal (twice, no echo) or one line of stdin. */
static int read_password(char *buf, size_t size)
{
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    for (int round = 0; round < (tty ? 2 : 1); round++) {
        char *dst = round ? buf + size / 2 : buf;
        if (tty) {
            fprintf(stderr, round ? "Again: " : "Password: ");
            tcgetattr(STDIN_FILENO, &old);
            quiet = old;
            quiet.c_lflag &= (tcflag_t)~ECHO;
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        char *ok = fgets(dst, (int)(size / 2), stdin);
        if (tty) {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
            fprintf(stderr, "\n");
        }
        if (ok == NULL)
            return -1;
        dst[strcspn(dst, "\r\n")] = '\0';
    }
    if (tty && strcmp(buf, buf + size / 2) != 0) {
        fprintf(stderr, "antenna passwd: the passwords differ\n");
        return -1;
    }
    return 0;
}

int auth_passwd_cli(int argc, char **argv)
{
    int batch = 0, del = 0, rc = 1;
    unsigned long iterations = AUTH_PASSWD_ITERATIONS;
    char pwbuf[2048], hash[AUTH_PASSWD_HASH_MAX], tmp[4096];
    const char *pw = NULL;
    FILE *in = NULL, *out = NULL;
    char *line = NULL;
    size_t lcap = 0;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt(argc, argv, "+bDi:h")) != -1) {
        switch (o) {
        case 'b': batch = 1; break;
        case 'D': del = 1; break;
        case 'i': {
            char *end;
            iterations = strtoul(optarg, &end, 10);
            if (*optarg == '\0' || *end || iterations < 1000 || iterations > MAX_ITERATIONS) {
                fprintf(stderr, "antenna passwd: -i: iterations from 1000 to %u\n",
                        MAX_ITERATIONS);
                return 2;
            }
            break;
        }
        case 'h': cli_usage(stdout); return 0;
        default: cli_usage(stderr); return 2;
        }
    }
    int want = del ? 2 : batch ? 3 : 2;
    if (argc - optind != want || (del && batch)) {
        cli_usage(stderr);
        return 2;
    }
    const char *path = argv[optind], *user = argv[optind + 1];
    if (!user_valid(user, strlen(user))) {
        fprintf(stderr, "antenna passwd: bad user name (no ':' or control characters)\n");
        return 2;
    }
    if (!del) {
        if (batch) {
            pw = argv[optind + 2];
        } else {
            if (read_password(pwbuf, sizeof(pwbuf)) < 0) {
                fprintf(stderr, "antenna passwd: no password read\n");
                return 1;
            }
            pw = pwbuf;
        }
        if (auth_passwd_hash((const uint8_t *)pw, strlen(pw), (uint32_t)iterations, hash,
                             sizeof(hash)) < 0) {
            fprintf(stderr, "antenna passwd: hashing failed\n");
            goto out;
        }
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    in = fopen(path, "r");
    if (in == NULL && (errno != ENOENT || del)) {
        fprintf(stderr, "antenna passwd: %s: %s\n", path, strerror(errno));
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (out = fdopen(fd, "w")) == NULL) {
        fprintf(stderr, "antenna passwd: %s: %s\n", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto out;
    }
    int found = 0;
    size_t ulen = strlen(user);
    ssize_t got;
    while (in && (got = getline(&line, &lcap, in)) >= 0) {
        if ((size_t)got > ulen && strncmp(line, user, ulen) == 0 && line[ulen] == ':') {
            found = 1;
            if (!del)
                fprintf(out, "%s:%s\n", user, hash);
            continue;
        }
        fputs(line, out);
        if (got > 0 && line[got - 1] != '\n')
            fputc('\n', out);
    }
    if (!found && !del)
        fprintf(out, "%s:%s\n", user, hash);
    if (fflush(out) != 0 || fsync(fileno(out)) != 0) {
        fprintf(stderr, "antenna passwd: %s: %s\n", tmp, strerror(errno));
        goto out;
    }
    if (del && !found) {
        fprintf(stderr, "antenna passwd: %s: no user '%s'\n", path, user);
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, path) != 0) {
        fprintf(stderr, "antenna passwd: %s: %s\n", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(pwbuf, sizeof(pwbuf));
    free(line);
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    return rc;
}
