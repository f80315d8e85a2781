/* api_ctl_commands.c -- `antenna ctl commands`: downlink commands through
 * the management API (docs/commands.md).
 *
 *   commands send DEVICE NAME [PARAMS_JSON]   POST /api/v1/devices/DEVICE/commands
 *   commands show CMD_ID                       GET /api/v1/commands/CMD_ID
 *   commands list DEVICE                       GET /api/v1/devices/DEVICE/commands
 *   commands cancel CMD_ID                     DELETE /api/v1/commands/CMD_ID
 *
 * The ctl's own thread only; the HTTP and the printing are api_ctl.c's
 * (api_ctl_int.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_ctl_int.h"

static const char *const CMD_COLS[] = {"id", "name", "status", "attempts", "qos", NULL};

/* A path segment we put in a URL as is. */
static int plain_segment(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 200 && strpbrk(s, "/?#% ") == NULL;
}

int api_ctl_commands(ctl_t *c)
{
    const char *sub = ctl_nargs(c) > 1 ? ctl_arg(c, 1) : "";
    const char *a = ctl_arg(c, 2);
    char path[512];
    if (strcmp(sub, "send") == 0) {
        if (ctl_nargs(c) < 4 || ctl_nargs(c) > 5)
            return ctl_usage_error("commands send DEVICE NAME [PARAMS_JSON]");
        if (!plain_segment(a))
            return ctl_usage_error("commands: \"%s\" is not a client id this command can send to",
                                   a);
        json_t *params =
            ctl_nargs(c) == 5 ? json_loads(ctl_arg(c, 4), JSON_DECODE_ANY, NULL) : json_null();
        if (params == NULL)
            return ctl_usage_error("commands send: the params are not JSON");
        json_t *b = json_pack("{s:s, s:o}", "name", ctl_arg(c, 3), "params", params);
        char *body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
        snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", a);
        int rc = ctl_get_body(c, path, body, NULL, NULL);
        free(body);
        return rc;
    }
    if (ctl_nargs(c) != 3)
        return ctl_usage_error("commands send DEVICE NAME [PARAMS] | show CMD_ID | list DEVICE | "
                               "cancel CMD_ID");
    if (!plain_segment(a))
        return ctl_usage_error("commands: \"%s\" is not an id", a);
    if (strcmp(sub, "show") == 0) {
        snprintf(path, sizeof(path), "/api/v1/commands/%s", a);
        return ctl_get_body(c, path, NULL, NULL, NULL);
    }
    if (strcmp(sub, "list") == 0) {
        snprintf(path, sizeof(path), "/api/v1/devices/%s/commands", a);
        return ctl_get_body(c, path, NULL, CMD_COLS, "data");
    }
    if (strcmp(sub, "cancel") == 0) {
        snprintf(path, sizeof(path), "/api/v1/commands/%s", a);
        return ctl_delete(c, path, "cancelled");
    }
    return ctl_usage_error("unknown commands command '%s'", sub);
}
