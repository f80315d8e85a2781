/* cli.h -- the antenna binary's subcommands (`antenna NAME args...`).
 *
 * Each subcommand lives with the module it serves (passwd with auth, ctl
 * with the API, store with the store) and is listed in main.c's table.  It
 * gets argv from its own name on (argv[0] is the subcommand) and returns the
 * process's exit status: 0 success, 1 an error it has printed, 2 bad usage.
 */
#ifndef ANTENNA_CLI_H
#define ANTENNA_CLI_H

typedef int (*cli_fn)(int argc, char **argv);

typedef struct {
    const char *name;
    cli_fn fn;
    const char *summary; /* one line for `antenna --help` */
} cli_command_t;

#endif
