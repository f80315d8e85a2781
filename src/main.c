/* main.c -- the antenna binary: options, configuration, signals, life cycle.
 *
 * The main thread parses the command line, loads the configuration, opens
 * the listeners, starts the workers and then only waits for signals on a
 * signalfd (SIGTERM/SIGINT: stop; SIGHUP: reopen the log and reload the TLS
 * certificates and keys, see server_tls_reload).  The signals are
 * blocked before any worker starts, so no worker is ever interrupted.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "auth_chain.h"
#include "auth_passwd.h"
#include "api.h"
#include "api_ctl.h"
#include "api_keys.h"
#include "cli.h"
#include "conf.h"
#include "log.h"
#include "server.h"
#include "store_cli.h"

/* Subcommands: `antenna NAME ...` (cli.h).  Each module adds its line. */
static const cli_command_t commands[] = {
    {"store", store_cli_main, "inspect, export, import, compact, expire a store"},
    {"passwd", auth_passwd_cli, "add, change or delete a user of a password file"},
    {"ctl", api_ctl_main, "talk to a running broker's REST API (status, clients, ...)"},
    {"apikey", api_keys_cli, "create an API key for the management API (api.keys_file)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: antenna [options]\n"
            "       antenna COMMAND [args]   (COMMAND --help for its own)\n"
            "\n"
            "  -c, --config FILE   read the configuration from FILE (YAML)\n"
            "  -p, --port N        listen on port N (overrides the first listener)\n"
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

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'v'},
        {"recover", no_argument, NULL, 'R'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    int have_port = 0, recover = 0;
    uint16_t port = 0;
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

    conf_t conf;
    conf_defaults(&conf);
    if (config) {
        char err[512];
        if (conf_load(&conf, config, err, sizeof(err)) < 0) {
            fprintf(stderr, "antenna: %s\n", err);
            return 1;
        }
    }
    if (have_port)
        conf.listeners[0].port = port;
    conf.persistence_recover = (uint8_t)recover;
    if (conf.log_target == CONF_LOG_TO_FILE && conf.log_file[0] == '\0') {
        fprintf(stderr, "antenna: log.target is file but log.file is empty\n");
        return 1;
    }
    if (log_open(conf.log_target == CONF_LOG_TO_SYSLOG ? "" : conf.log_file, conf.log_level) < 0) {
        fprintf(stderr, "antenna: cannot open log file %s: %s\n", conf.log_file, strerror(errno));
        return 1;
    }
    log_set_output(conf.log_format == CONF_LOG_JSON, conf.log_target == CONF_LOG_TO_SYSLOG);

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
    if (config == NULL)
        log_warn("no configuration file: local-only mode (listening on loopback, anonymous "
                 "clients allowed); use --config to configure listeners and authentication");
    server_t srv;
    int rc = 1;
    if (server_init(&srv, &conf) < 0) {
        if (conf.log_target != CONF_LOG_TO_STDERR || conf.log_file[0])
            fprintf(stderr, "antenna: start-up failed, see the log\n");
        goto out;
    }
    for (uint32_t i = 0; i < srv.nlisteners; i++)
        log_info("listener %s: listening on %s:%u", conf.listeners[i].name,
                 conf.listeners[i].address, srv.listen_ports[i]);
    if (server_start(&srv) < 0) {
        server_stop(&srv);
        goto out;
    }
    log_info("%u workers running", srv.nworkers);

    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof(si));
        if (n != (ssize_t)sizeof(si)) {
            if (n < 0 && errno == EINTR)
                continue;
            log_error("signalfd read: %s", strerror(errno));
            break;
        }
        if (si.ssi_signo == SIGHUP) {
            if (log_reopen() < 0)
                log_error("cannot reopen log file: %s", strerror(errno));
            else
                log_info("log reopened (SIGHUP)");
            server_tls_reload(&srv);
            if (auth_chain_reload(srv.auth) == 0)
                log_info("authentication files reloaded (SIGHUP)");
            api_reload(&srv);
            continue;
        }
        log_info("signal %u: shutting down", si.ssi_signo);
        break;
    }
    server_stop(&srv);
    rc = 0;
out:
    server_free(&srv);
    log_info("antenna stopped");
    log_close();
    close(sfd);
    return rc;
}
