/* check.h -- `antenna check -c FILE` (check.c): load everything a
 * configuration names and report every problem at once. */
#ifndef ANTENNA_CHECK_H
#define ANTENNA_CHECK_H

int check_cli(int argc, char **argv);

#endif
