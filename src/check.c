/* check.c -- `antenna check -c FILE`: everything a configuration names,
 * loaded the way the broker loads it, every problem reported at once.
 *
 * The broker stops at the first start-up error; an operator fixing a new
 * configuration wants the whole list.  This command parses the file (a
 * syntax or key error stops there: nothing after it is trustworthy), then
 * loads, independently of each other, each TLS listener's certificate, key
 * and CA file, the ACL file, the authentication chain (password file, JWT
 * keys, webhook and Redis settings), the management API's key and user
 * files and certificate, and checks that the store and log locations are
 * writable.  It uses the broker's own loaders, so a file accepted here is
 * accepted at start-up, with the same messages.  Nothing listens, no thread
 * of the broker runs, no file is created.  Exit 0 when everything loads,
 * 1 otherwise (2: usage).
 */
#include "check.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_keys.h"
#include "auth_acl.h"
#include "auth_chain.h"
#include "conf.h"
#include "log.h"
#include "module.h"
#include "net_tls.h"

typedef struct {
    unsigned problems;
    unsigned checked;
} check_t;

static void problem(check_t *ck, const char *what, const char *msg)
{
    ck->problems++;
    fprintf(stderr, "antenna check: %s: %s\n", what, msg);
}

static void ok(check_t *ck, const char *what)
{
    ck->checked++;
    printf("ok: %s\n", what);
}

/* A directory the broker writes into: it exists and is writable, or it
 * can be created (its nearest existing parent is writable). */
static void check_dir(check_t *ck, const char *what, const char *dir)
{
    char path[512], msg[1400];
    snprintf(path, sizeof(path), "%s", dir);
    struct stat st;
    if (stat(path, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(msg, sizeof(msg), "%s exists and is not a directory", dir);
            problem(ck, what, msg);
        } else if (access(path, W_OK | X_OK) < 0) {
            snprintf(msg, sizeof(msg), "%s: not writable: %s", dir, strerror(errno));
            problem(ck, what, msg);
        } else {
            ok(ck, what);
        }
        return;
    }
    /* walk up to the first existing ancestor: the broker creates the rest */
    for (;;) {
        char *slash = strrchr(path, '/');
        if (slash == NULL) {
            snprintf(path, sizeof(path), ".");
            break;
        }
        if (slash == path) {
            path[1] = '\0';
            break;
        }
        *slash = '\0';
        if (stat(path, &st) == 0)
            break;
    }
    if (access(path, W_OK | X_OK) < 0) {
        snprintf(msg, sizeof(msg), "%s does not exist and cannot be created in %s: %s", dir, path,
                 strerror(errno));
        problem(ck, what, msg);
        return;
    }
    ok(ck, what);
}

/* The log file: writable if it exists, else its directory is. */
static void check_log_file(check_t *ck, const char *file)
{
    char msg[1400];
    if (access(file, F_OK) == 0) {
        if (access(file, W_OK) < 0) {
            snprintf(msg, sizeof(msg), "%s: not writable: %s", file, strerror(errno));
            problem(ck, "log.file", msg);
            return;
        }
        ok(ck, "log.file");
        return;
    }
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", file);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    if (access(dir, W_OK | X_OK) < 0) {
        snprintf(msg, sizeof(msg), "%s cannot be created in %s: %s", file, dir, strerror(errno));
        problem(ck, "log.file", msg);
        return;
    }
    ok(ck, "log.file");
}

static void check_readable(check_t *ck, const char *what, const char *file)
{
    if (file[0] == '\0')
        return;
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        char msg[600];
        snprintf(msg, sizeof(msg), "%s: cannot read it: %s", file, strerror(errno));
        problem(ck, what, msg);
        return;
    }
    fclose(f);
    ok(ck, what);
}

static void check_listeners(check_t *ck, const conf_t *cf)
{
    for (uint32_t i = 0; i < cf->nlisteners; i++) {
        const conf_listener_t *l = &cf->listeners[i];
        if (l->transport != CONF_TRANSPORT_TLS && l->transport != CONF_TRANSPORT_WSS)
            continue;
        char what[64], err[1024];
        snprintf(what, sizeof(what), "listeners[%u]", i);
        struct ssl_ctx_st *ctx = tls_ctx_new(l, err, sizeof(err));
        if (ctx == NULL) {
            problem(ck, what, err);
            continue;
        }
        tls_ctx_free(ctx);
        ok(ck, what);
    }
}

static void check_auth(check_t *ck, const conf_t *cf)
{
    char err[1024];
    int acl_bad = 0;
    if (cf->auth.acl_file[0]) {
        auth_acl_t *acl = auth_acl_load(cf->auth.acl_file, err, sizeof(err));
        if (acl == NULL) {
            problem(ck, "auth.acl_file", err);
            acl_bad = 1;
        } else {
            auth_acl_free(acl);
            ok(ck, "auth.acl_file");
        }
    }
    /* the chain loads the password file, JWT keys, webhook and Redis
     * settings (and the ACL file again: its error is not repeated) */
    auth_chain_t *ch = auth_chain_new(cf, err, sizeof(err));
    if (ch == NULL) {
        if (!(acl_bad && strstr(err, cf->auth.acl_file)))
            problem(ck, "auth", err);
        return;
    }
    auth_chain_free(ch);
    ok(ck, "auth");
}

static void check_api(check_t *ck, const conf_t *cf)
{
    if (!cf->api_enabled)
        return;
    char err[1024];
    api_creds_t *c = api_creds_load(cf->api_keys_file, cf->api_users_file,
                                    cf->api_min_password_iterations, err, sizeof(err));
    if (c == NULL) {
        problem(ck, "api", err);
    } else {
        api_creds_free(c);
        ok(ck, "api (keys and users)");
    }
    check_readable(ck, "api.tls_cert", cf->api_tls_cert);
    check_readable(ck, "api.tls_key", cf->api_tls_key);
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: antenna check -c FILE\n"
                 "Load everything FILE names (certificates and keys, password, ACL and\n"
                 "JWT key files, API credentials, store and log locations) and report\n"
                 "every problem; exit 0 when all of it loads, 1 otherwise.\n");
}

int check_cli(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *file = NULL;
    int o;
    optind = 1;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            file = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (file == NULL || optind < argc) {
        usage(stderr);
        return 2;
    }
    conf_t conf;
    conf_defaults(&conf);
    module_conf_defaults(&conf); /* the modules' sections are known keys */
    char err[512];
    if (conf_load(&conf, file, err, sizeof(err)) < 0) {
        fprintf(stderr, "antenna check: %s\n", err);
        return 1;
    }
    /* the loaders' own log lines (warnings) go to stderr, errors are ours */
    log_open("", AN_LOG_WARN);
    check_t ck = {0, 0};
    ok(&ck, "syntax and keys");
    check_listeners(&ck, &conf);
    check_auth(&ck, &conf);
    check_api(&ck, &conf);
    if (conf.persistence_enabled && conf.persistence_backend == CONF_STORE_ROCKSDB)
        check_dir(&ck, "persistence.dir", conf.data_dir); /* redis: reached at start */
    if (conf.log_target == CONF_LOG_TO_FILE || conf.log_file[0])
        check_log_file(&ck, conf.log_file);
    if (ck.problems) {
        fprintf(stderr, "antenna check: %s: %u problem%s\n", file, ck.problems,
                ck.problems == 1 ? "" : "s");
        return 1;
    }
    printf("%s: ok (%u checks)\n", file, ck.checked);
    return 0;
}
