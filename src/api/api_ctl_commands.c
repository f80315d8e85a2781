/* api_ctl_commands.c -- `antenna ctl commands`: downlink commands through
 * the management API (docs/commands.md).
 *
 *   commands send DEVICE NAME [PARAMS_JSON]   POST /api/v1/devices/DEVICE/commands
 *   commands show CMD_ID                       GET /api/v1/commands/CMD_ID
 *   commands list DEVICE                       GET /api/v1/devices/DEVICE/commands
 *   commands cancel CMD_ID                     DELETE /api/v1/commands/CMD_ID
 *   commands group-send NAME [PARAMS_JSON] SELECTOR...
 *                                              POST /api/v1/groups/commands
 *       SELECTOR: KEY=VALUE (a tag; several: all of them) or prefix:P (the
 *       client ids starting with P); the group's limits are the module's
 *   commands group-show GROUP_ID               GET /api/v1/groups/commands/GROUP_ID
 *   commands group-cancel GROUP_ID             DELETE /api/v1/groups/commands/GROUP_ID
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

/* group-send NAME [PARAMS_JSON] SELECTOR...: the body's selector from
 * the words after NAME (and the params when the first is JSON). */
static int group_send(ctl_t *c)
{
    const char *use = "commands group-send NAME [PARAMS_JSON] KEY=VALUE... | prefix:P";
    if (ctl_nargs(c) < 4)
        return ctl_usage_error("%s", use);
    int i = 3;
    json_t *params = NULL;
    const char *w = ctl_arg(c, 3);
    if (w[0] == '{' || w[0] == '[' || strcmp(w, "null") == 0) {
        params = json_loads(w, JSON_DECODE_ANY, NULL);
        if (params == NULL)
            return ctl_usage_error("commands group-send: the params are not JSON");
        i++;
    }
    json_t *tags = json_object(), *sel = json_object();
    const char *prefix = NULL;
    for (; i < ctl_nargs(c); i++) {
        w = ctl_arg(c, i);
        const char *eq = strchr(w, '=');
        if (strncmp(w, "prefix:", 7) == 0 && w[7] != '\0') {
            prefix = w + 7;
        } else if (eq != NULL && eq != w) {
            char *k = strndup(w, (size_t)(eq - w));
            json_object_set_new(tags, k, json_string(eq + 1));
            free(k);
        } else {
            json_decref(params);
            json_decref(tags);
            json_decref(sel);
            return ctl_usage_error("commands group-send: \"%s\" is neither KEY=VALUE nor prefix:P",
                                   w);
        }
    }
    if ((prefix != NULL) == (json_object_size(tags) > 0)) {
        json_decref(params);
        json_decref(tags);
        json_decref(sel);
        return ctl_usage_error("%s (tags or a prefix, not both)", use);
    }
    if (prefix != NULL) {
        json_object_set_new(sel, "client_id_prefix", json_string(prefix));
        json_decref(tags);
    } else {
        json_object_set_new(sel, "tags", tags);
    }
    json_t *b = json_pack("{s:o, s:s, s:o}", "selector", sel, "name", ctl_arg(c, 2), "params",
                          params ? params : json_null());
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    int rc = ctl_get_body(c, "/api/v1/groups/commands", body, NULL, NULL);
    free(body);
    return rc;
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
    if (strcmp(sub, "group-send") == 0)
        return group_send(c);
    if (ctl_nargs(c) != 3)
        return ctl_usage_error("commands send DEVICE NAME [PARAMS] | show CMD_ID | list DEVICE | "
                               "cancel CMD_ID | group-send NAME [PARAMS] SELECTOR... | "
                               "group-show GROUP_ID | group-cancel GROUP_ID");
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
    if (strcmp(sub, "group-show") == 0) {
        snprintf(path, sizeof(path), "/api/v1/groups/commands/%s", a);
        return ctl_get_body(c, path, NULL, NULL, NULL);
    }
    if (strcmp(sub, "group-cancel") == 0) {
        snprintf(path, sizeof(path), "/api/v1/groups/commands/%s", a);
        return ctl_delete(c, path, "cancelled");
    }
    return ctl_usage_error("unknown commands command '%s'", sub);
}
