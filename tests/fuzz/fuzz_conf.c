/* fuzz_conf.c -- libFuzzer target for the YAML configuration loader
 * (src/core/conf.c, conf_load).
 *
 * Input: the bytes of a configuration file, written to a memfd and loaded
 * by its /proc/self/fd path, the way the broker loads its file.  Contract
 * checks, any violation aborts:
 *   - a failed load leaves the configuration byte for byte as it was and
 *     says why: "PATH:..." or "PATH: ...", non-empty, NUL-terminated;
 *     the same file fails again with the same message, and with a small
 *     error buffer the message is that one cut short (never overrun);
 *     with no error buffer at all it fails too, without writing one;
 *   - a successful load gives a configuration that conf_walk() can show
 *     (enum indexes in range, strings terminated, 1..16 listeners); the
 *     file loaded again over the result (SIGHUP) and over fresh defaults
 *     gives exactly the same configuration, shown the same way.
 * conf_walk's text (section, key and value per line) is what is compared,
 * so padding bytes of conf_t play no part.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "module.h" /* the modules' sections: loaded like the broker loads them */

#include "fuzz_check.h"

typedef struct {
    char *s;
    size_t n, cap;
    int depth;
} text_t;

static void put(text_t *t, const char *a, const char *b)
{
    size_t la = a ? strlen(a) : 4, lb = b ? strlen(b) : 4;
    size_t need = t->n + la + lb + 4;
    if (need > t->cap) {
        size_t c = t->cap ? t->cap : 4096;
        while (c < need)
            c *= 2;
        t->s = realloc(t->s, c);
        CHECK(t->s != NULL);
        t->cap = c;
    }
    t->n += (size_t)sprintf(t->s + t->n, "%s=%s\n", a ? a : "(nil)", b ? b : "(nil)");
}

static void visit(void *ud, int kind, const char *key, const char *s, uint64_t u)
{
    text_t *t = ud;
    char num[32];
    switch (kind) {
    case CONF_V_SECTION:
    case CONF_V_LIST:
    case CONF_V_ITEM:
        t->depth++;
        put(t, key, kind == CONF_V_ITEM ? "[item]" : "{");
        break;
    case CONF_V_END:
        CHECK(t->depth > 0);
        t->depth--;
        put(t, key, "}");
        break;
    case CONF_V_STR:
        CHECK(s != NULL);
        CHECK(strlen(s) < 8192);
        put(t, key, s);
        break;
    case CONF_V_BOOL:
        CHECK(u <= 1);
        /* fall through */
    case CONF_V_UINT:
        snprintf(num, sizeof(num), "%llu", (unsigned long long)u);
        put(t, key, num);
        break;
    default:
        CHECK(0);
    }
}

static text_t show(const conf_t *c)
{
    text_t t = {0};
    conf_walk(c, visit, &t);
    CHECK(t.depth == 0);
    CHECK(t.s != NULL);
    return t;
}

static int fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fd = memfd_create("fuzz_conf.yaml", 0);
    CHECK(fd >= 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[512], err2[512], small[24];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);

    conf_t *c = malloc(sizeof(*c)), *before = malloc(sizeof(*c)), *fresh = malloc(sizeof(*c));
    CHECK(c && before && fresh);
    conf_defaults(c);
    module_conf_defaults(c);
    memcpy(before, c, sizeof(*c));
    memset(err, 'x', sizeof(err));
    int rc = conf_load(c, path, err, sizeof(err));
    CHECK(rc == 0 || rc == -1);
    CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    if (rc < 0) {
        size_t pl = strlen(path);
        CHECK(memcmp(c, before, sizeof(*c)) == 0);
        CHECK(strncmp(err, path, pl) == 0 && err[pl] == ':');
        CHECK(strlen(err) > pl + 2);
        CHECK(conf_load(c, path, err2, sizeof(err2)) == -1);
        CHECK(strcmp(err, err2) == 0);
        memset(small, 'y', sizeof(small));
        CHECK(conf_load(c, path, small, 17) == -1);
        CHECK(small[17] == 'y' && memchr(small, '\0', 17) != NULL);
        CHECK(strncmp(small, err, strlen(small)) == 0);
        CHECK(strlen(small) == (strlen(err) < 16 ? strlen(err) : 16));
        CHECK(conf_load(c, path, NULL, 0) == -1);
        CHECK(memcmp(c, before, sizeof(*c)) == 0);
        goto out;
    }
    CHECK(err[0] == '\0');
    CHECK(c->nlisteners >= 1 && c->nlisteners <= CONF_MAX_LISTENERS);
    text_t t1 = show(c);
    /* SIGHUP: the same file over what it gave */
    CHECK(conf_load(c, path, err, sizeof(err)) == 0);
    text_t t2 = show(c);
    /* a second process: the same file over fresh defaults */
    conf_defaults(fresh);
    module_conf_defaults(fresh);
    CHECK(conf_load(fresh, path, err, sizeof(err)) == 0);
    text_t t3 = show(fresh);
    CHECK(t1.n == t2.n && memcmp(t1.s, t2.s, t1.n) == 0);
    CHECK(t1.n == t3.n && memcmp(t1.s, t3.s, t1.n) == 0);
    free(t1.s);
    free(t2.s);
    free(t3.s);
out:
    free(c);
    free(before);
    free(fresh);
    return 0;
}
