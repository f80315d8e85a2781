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

#include <stddef.h>

/* The `ctl` subcommand (main.c's commands[] table); argv[0] is "ctl". */
int api_ctl_main(int argc, char **argv);

/* For subcommands in their own files (api_ctl_<name>.c): the parsed
 * command line and one HTTP request.  api_ctl_http: 0 with *status and the
 * answer's bytes (*out, malloc'd, NUL-terminated, or NULL when empty), or 1
 * after printing why the server cannot be reached. */
typedef struct api_ctl ctl_t;
int api_ctl_nargs(const ctl_t *c);
const char *api_ctl_arg(const ctl_t *c, int i); /* args[0] is the command */
int api_ctl_json(const ctl_t *c);               /* --json */
int api_ctl_http(ctl_t *c, const char *method, const char *path, const char *ctype,
                 const char *body, size_t body_len, long *status, char **out, size_t *out_len);

/* `antenna ctl devices ...` (api_ctl_devices.c) */
int api_ctl_devices(ctl_t *c);

#endif
