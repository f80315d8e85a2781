/* commands.h -- downlink commands to devices (issue 18): the `commands:`
 * module.  The design is at the top of commands.c; docs/commands.md. */
#ifndef ANTENNA_COMMANDS_H
#define ANTENNA_COMMANDS_H

#include "module.h"

extern const module_t commands_module;

/* The $cmd ACL (commands_acl.c; server_t.cmd_acl, NULL while off): does it
 * refuse client `id` (user `user`, may be NULL) a SUBSCRIBE to filter t
 * (subscribe: 1, without a $share/ part) or a PUBLISH to topic t?  A
 * client reads only its own PREFIX/{id}/..., and writes only its own
 * PREFIX/{id}/reply[/...]; commands.acl_admins users pass. */
struct cmd_acl_s;
int cmd_acl_refuses(const struct cmd_acl_s *a, const char *id, size_t idlen, const char *user,
                    const uint8_t *t, size_t tl, int subscribe);

#endif
