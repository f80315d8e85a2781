/* api_ctl.h -- `antenna ctl`: the command-line client of the REST API.
 *
 *   antenna ctl [--url URL] [--key KEY | --user U --password P] [--json]
 *               COMMAND [args] [options]
 *
 * It talks HTTP (libcurl's easy interface: one request at a time is all a
 * CLI needs) to the API listener documented in docs/api.md and prints human
 * tables, or the API's own JSON with --json.  It never touches the broker's
 * state directly, so it works against a broker on another host as well.
 * Exit status (cli.h): 0 success, 1 an error it printed (API error,
 * unreachable server), 2 bad usage.
 */
#ifndef ANTENNA_API_CTL_H
#define ANTENNA_API_CTL_H

/* The `ctl` subcommand (main.c's commands[] table); argv[0] is "ctl". */
int api_ctl_main(int argc, char **argv);

#endif
