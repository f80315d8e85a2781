/* main.c -- the antenna binary: options, configuration, signals, life cycle.
 *
 * The main thread parses the command line, loads the configuration, opens
 * the listeners, starts the workers and then only waits for signals on a
 * signalfd (SIGTERM/SIGINT: stop; SIGHUP: reload_run, reload.h: reopen the
 * log, reload the TLS certificates and keys, the auth files and the YAML).  The signals are
 * blocked before any worker starts, so no worker is ever interrupted.
 *
 * Every connection is a file descriptor: at start the soft open-file limit
 * is raised to the hard one, with a warning when even that is below what
 * max_connections (or, unlimited, a few thousand) needs.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "auth_chain.h"
#include "check.h"
#include "auth_passwd.h"
#include "api.h"
#include "api_ctl.h"
#include "api_keys.h"
#include "cli.h"
#include "conf.h"
#include "log.h"
#include "module.h"
#include "reload.h"
#include "sdnotify.h"
#include "server.h"
#include "store_cli.h"

/* Subcommands: `antenna NAME ...` (cli.h).  Each module adds its line. */
static const cli_command_t commands[] = {
    {"store", store_cli_main, "inspect, export, import, compact, expire a store"},
    {"passwd", auth_passwd_cli, "add, change or delete a user of a password file"},
    {"ctl", api_ctl_main, "talk to a running broker's REST API (status, clients, ...)"},
    {"check", check_cli, "load everything a configuration names, report every problem"},
    {"apikey", api_keys_cli, "create an API key (api.keys_file) or user (api.users_file)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: antenna [options]\n"
                 "       antenna COMMAND [args]   (COMMAND --help for its own)\n"
                 "\n"
                 "  -c, --config FILE   read the configuration from FILE (YAML)\n"
                 "  -p, --port N        listen on port N (overrides the first listener)\n"
                 "      --api-port N    open the management API on port N (a taken port\n"
                 "                      is an error); without a configuration file the\n"
                 "                      API opens on 127.0.0.1:18083 only if it is free\n"
                 "      --no-api        do not open the management API\n"
                 "      --recover       start on a damaged store (persistence.dir): drop\n"
                 "                      the damaged records of its write-ahead log, keep\n"
                 "                      the intact ones (the logs are copied aside first);\n"
                 "                      without it antenna refuses to start on one\n"
                 "  -h, --help          print this help and exit\n"
                 "  -v, --version       print the version and exit\n"
                 "\n"
                 "Without --config, antenna listens on 127.0.0.1:1883 and allows\n"
                 "anonymous clients (local-only). See config.example.yaml.\n");
    if (commands[0].name) {
        fprintf(out, "\nCommands:\n");
        for (const cli_command_t *c = commands; c->name; c++)
            fprintf(out, "  %-18s  %s\n", c->name, c->summary);
    }
}

/* Descriptors the broker needs besides its clients: listeners, epoll and
 * eventfds, the store's files, log, API, auth backends. */
#define FD_OVERHEAD 256
/* What "enough" means without max_connections. */
#define FD_WANTED_UNLIMITED 4096

/* Raise the soft RLIMIT_NOFILE to the hard limit; warn when that is less
 * than the configured connections need. */
static void raise_nofile(const conf_t *conf)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warn("getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return;
    }
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            log_warn("cannot raise the open-file limit from %llu to %llu: %s",
                     (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
            rl.rlim_cur = was;
        }
    }
    uint64_t conns = conf->max_connections;
    for (uint32_t i = 0; conns == 0 && i < conf->nlisteners; i++)
        if (conf->listeners[i].max_connections == 0) {
            conns = FD_WANTED_UNLIMITED;
            break;
        }
    for (uint32_t i = 0;
         conf->max_connections == 0 && conns != FD_WANTED_UNLIMITED && i < conf->nlisteners; i++)
        conns += conf->listeners[i].max_connections;
    uint64_t wanted = conns + FD_OVERHEAD;
    if (rl.rlim_cur != RLIM_INFINITY && (uint64_t)rl.rlim_cur < wanted)
        log_warn("open-file limit is %llu: %s%llu connections need about %llu; past it "
                 "connections are refused (raise it: ulimit -n, systemd LimitNOFILE)",
                 (unsigned long long)rl.rlim_cur, conf->max_connections ? "max_connections " : "",
                 (unsigned long long)conns, (unsigned long long)wanted);
    else
        log_info("open-file limit: %llu%s", (unsigned long long)rl.rlim_cur,
                 rl.rlim_cur != was ? " (soft limit raised to the hard one)" : "");
}

static int parse_port(const char *s, uint16_t *port)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < 0 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

/* Loop turns of every worker so far.  Each worker turns at least once a
 * second (its gauge timer), so a sum that stops growing means a worker is
 * stuck: the watchdog is then not fed and systemd restarts the broker. */
static int workers_progressed(const server_t *srv, uint64_t *last)
{
    int all = 1;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        uint64_t turns = 0;
        for (int b = 0; b < AN_HIST_N; b++)
            turns += STAT_GET(srv->workers[i].stats.loop_turn.bucket[b]);
        if (turns == last[i])
            all = 0;
        last[i] = turns;
    }
    return all;
}

/* Under systemd, the state directory (StateDirectory=antenna sets
 * $STATE_DIRECTORY) is where the store goes unless the file says
 * otherwise: not ./data in whatever directory the service started in. */
static void state_directory_default(conf_t *conf)
{
    const char *sd = getenv("STATE_DIRECTORY");
    conf_t def;
    conf_defaults(&def);
    if (sd == NULL || sd[0] == '\0' || strcmp(conf->data_dir, def.data_dir) != 0)
        return;
    const char *colon = strchr(sd, ':'); /* several directories: the first */
    size_t n = colon ? (size_t)(colon - sd) : strlen(sd);
    if (n + sizeof("/data") > sizeof(conf->data_dir))
        return;
    memcpy(conf->data_dir, sd, n);
    memcpy(conf->data_dir + n, "/data", sizeof("/data"));
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'v'},
        {"recover", no_argument, NULL, 'R'},      {"api-port", required_argument, NULL, 'A'},
        {"no-api", no_argument, NULL, 'N'},       {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int have_port = 0, recover = 0, have_api_port = 0, no_api = 0;
    uint16_t port = 0, api_port = 0;
    if (argc > 1)
        for (const cli_command_t *c = commands; c->name; c++)
            if (strcmp(argv[1], c->name) == 0)
                return c->fn(argc - 1, argv + 1);
    int o;
    opterr = 0;
    while ((o = getopt_long(argc, argv, "c:p:hv", opts, NULL)) != -1) {
        switch (o) {
        case 'c':
            config = optarg;
            break;
        case 'p':
            if (parse_port(optarg, &port) < 0) {
                fprintf(stderr, "antenna: bad port '%s'\n", optarg);
                return 1;
            }
            have_port = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'v':
            printf("antenna %s\n", ANTENNA_VERSION);
            return 0;
        case 'R':
            recover = 1;
            break;
        case 'A':
            if (parse_port(optarg, &api_port) < 0) {
                fprintf(stderr, "antenna: bad API port '%s'\n", optarg);
                return 1;
            }
            have_api_port = 1;
            break;
        case 'N':
            no_api = 1;
            break;
        default:
            fprintf(stderr, "antenna: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "antenna: unexpected argument '%s'\n", argv[optind]);
        return 1;
    }

    static conf_t conf, loaded; /* loaded: the file as read, for reload.h */
    conf_defaults(&conf);
    module_conf_defaults(&conf); /* the modules' sections (module.h) */
    if (config) {
        char err[512];
        if (conf_load(&conf, config, err, sizeof(err)) < 0) {
            fprintf(stderr, "antenna: %s\n", err);
            return 1;
        }
    }
    loaded = conf;
    if (have_port)
        conf.listeners[0].port = port;
    /* The embedded defaults open the API on 18083 (EMQX's dashboard port)
     * only if it is free; a port asked for (file or --api-port) must be. */
    conf.api_optional = config == NULL && !have_api_port;
    if (have_api_port) {
        conf.api_port = api_port;
        conf.api_enabled = 1;
    }
    if (no_api)
        conf.api_enabled = 0;
    conf.persistence_recover = (uint8_t)recover;
    state_directory_default(&conf);
    if (conf.log_target == CONF_LOG_TO_FILE && conf.log_file[0] == '\0') {
        fprintf(stderr, "antenna: log.target is file but log.file is empty\n");
        return 1;
    }
    if (log_open(conf.log_target == CONF_LOG_TO_SYSLOG ? "" : conf.log_file, conf.log_level) < 0) {
        fprintf(stderr, "antenna: cannot open log file %s: %s\n", conf.log_file, strerror(errno));
        return 1;
    }
    log_set_output(conf.log_format == CONF_LOG_JSON, conf.log_target == CONF_LOG_TO_SYSLOG);
    log_set_stderr_mirror(1); /* until the server runs: errors reach stderr too */

    /* before any thread exists: signals go to the signalfd only */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0) {
        log_error("signalfd: %s", strerror(errno));
        return 1;
    }

    log_info("antenna %s starting", ANTENNA_VERSION);
    raise_nofile(&conf);
    if (config == NULL)
        log_warn("no configuration file: local-only mode (listening on loopback, anonymous "
                 "clients allowed); use --config to configure listeners and authentication");
    server_t srv;
    int rc = 1;
    if (server_init(&srv, &conf) < 0) {
        if (conf.log_target != CONF_LOG_TO_STDERR || conf.log_file[0])
            fprintf(stderr, "antenna: start-up failed (the errors above are in the log too)\n");
        goto out;
    }
    reload_init(&srv, config, &loaded);
    for (uint32_t i = 0; i < srv.nlisteners; i++)
        log_info("listener %s: listening on %s:%u", conf.listeners[i].name,
                 conf.listeners[i].address, srv.listen_ports[i]);
    if (server_start(&srv) < 0) {
        if (conf.log_target != CONF_LOG_TO_STDERR || conf.log_file[0])
            fprintf(stderr, "antenna: start-up failed (the errors above are in the log too)\n");
        server_stop(&srv);
        goto out;
    }
    log_info("%u workers running", srv.nworkers);
    log_set_stderr_mirror(0);
    if (sdnotify_send("READY=1\nSTATUS=serving") < 0)
        log_warn("NOTIFY_SOCKET: %s", strerror(errno));
    uint64_t watchdog_ms = sdnotify_watchdog_ms();
    uint64_t *turns = an_calloc(srv.nworkers, sizeof(*turns));
    if (watchdog_ms)
        log_info("systemd watchdog: every %llu ms while every worker turns",
                 (unsigned long long)(watchdog_ms / 2));

    for (;;) {
        struct signalfd_siginfo si;
        if (watchdog_ms) {
            struct pollfd pfd = {.fd = sfd, .events = POLLIN};
            int r = poll(&pfd, 1, (int)(watchdog_ms / 2));
            if (r == 0) {
                if (workers_progressed(&srv, turns))
                    sdnotify_send("WATCHDOG=1");
                else
                    log_warn("systemd watchdog: a worker made no progress, not fed");
                continue;
            }
            if (r < 0 && errno != EINTR) {
                log_error("poll: %s", strerror(errno));
                break;
            }
            if (r < 0)
                continue;
        }
        ssize_t n = read(sfd, &si, sizeof(si));
        if (n != (ssize_t)sizeof(si)) {
            if (n < 0 && errno == EINTR)
                continue;
            log_error("signalfd read: %s", strerror(errno));
            break;
        }
        if (si.ssi_signo == SIGHUP) {
            sdnotify_send("RELOADING=1");
            static reload_result_t res;
            reload_run(&srv, &res);
            sdnotify_send("READY=1");
            continue;
        }
        log_info("signal %u: shutting down", si.ssi_signo);
        break;
    }
    free(turns);
    sdnotify_send("STOPPING=1");
    server_stop(&srv);
    rc = 0;
out:
    reload_free(&srv); /* its retired auth chains before the workers' inboxes go */
    server_free(&srv);
    log_info("antenna stopped");
    log_close();
    close(sfd);
    return rc;
}
