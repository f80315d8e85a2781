/* commands.h -- downlink commands to devices (issue 18): the `commands:`
 * module.  The design is at the top of commands.c; docs/commands.md. */
#ifndef ANTENNA_COMMANDS_H
#define ANTENNA_COMMANDS_H

#include "module.h"

extern const module_t commands_module;

#endif
