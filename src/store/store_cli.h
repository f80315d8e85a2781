/* store_cli.h -- `antenna store ACTION ...`: inspect, export, import,
 * compact, expire and generate a broker's RocksDB store from the command
 * line (see store_cli.c for the export format and the rules).  The entry
 * point is listed in main.c's commands[] (cli.h): argv[0] is "store".
 */
#ifndef ANTENNA_STORE_CLI_H
#define ANTENNA_STORE_CLI_H

/* Returns the exit status: 0 success, 1 an error it printed, 2 bad usage. */
int store_cli_main(int argc, char **argv);

#endif
