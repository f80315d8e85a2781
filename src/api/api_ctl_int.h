/* api_ctl_int.h -- what a subcommand of `antenna ctl` kept in its own file
 * (api_ctl_<name>.c) uses of api_ctl.c: the parsed command line and the
 * calls that print an answer as the other subcommands do (--json, tables).
 * Single-threaded, like the whole ctl. */
#ifndef ANTENNA_API_CTL_INT_H
#define ANTENNA_API_CTL_INT_H

#include "api_ctl.h" /* ctl_t */

/* The positional arguments: args[0] is the subcommand ("commands"). */
int ctl_nargs(const ctl_t *c);
const char *ctl_arg(const ctl_t *c, int i);
/* GET path (POST body when body is not NULL) and print the answer: a
 * table of the array `what` with the preferred columns, or the object.
 * 0, or 1 (the error is printed). */
int ctl_get_body(ctl_t *c, const char *path, const char *body, const char *const *cols,
                 const char *what);
/* DELETE path; 2xx prints `done`. */
int ctl_delete(ctl_t *c, const char *path, const char *done);
/* A usage error: printed, returns 2. */
int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* api_ctl_commands.c: `antenna ctl commands ...` (docs/commands.md). */
int api_ctl_commands(ctl_t *c);

#endif
