/* commands_acl.c -- the $cmd ACL (docs/commands.md): a client subscribes
 * only to its own PREFIX/{client id}/... (no wildcard over the device
 * level, no other id) and publishes under PREFIX only to its own reply
 * topic PREFIX/{client id}/reply[/...].  Users named in
 * commands.acl_admins pass.
 *
 * It is a topic guard (router.h, router_guard), registered by the
 * module's init (main thread, before the workers run) when
 * commands.enabled and commands.acl: the broker asks it about a client's
 * PUBLISH under the prefix and about every SUBSCRIBE filter; it reads only
 * the module's configuration.  Off, nothing is registered; on, a PUBLISH
 * elsewhere costs the router's one-bit test of its first byte.
 */
#include <string.h>

#include "commands.h"
#include "commands_int.h"


static int is_admin(const cmd_conf_t *cf, const char *user)
{
    for (uint32_t i = 0; user && i < cf->nadmins; i++)
        if (strcmp(cf->admins[i], user) == 0)
            return 1;
    return 0;
}

/* The level of t starting at i: its end. */
static size_t level_end(const uint8_t *t, size_t tl, size_t i)
{
    while (i < tl && t[i] != '/')
        i++;
    return i;
}

static int refuse(const cmd_conf_t *cf, const char *user)
{
    return !is_admin(cf, user);
}

int cmd_acl_refuses(const cmd_conf_t *cf, const char *id, size_t idlen, const char *user,
                    const uint8_t *t, size_t tl, int subscribe)
{
    const char *p = cf->prefix;
    size_t pl = strlen(p), i = 0, j = 0;
    int dollar = p[0] == '$';
    /* a topic: a byte of the prefix decides most (the common case) */
    if (!subscribe && (tl < pl || t[0] != (uint8_t)p[0]))
        return 0;
    for (;;) { /* the prefix's levels */
        size_t pe = j;
        while (pe < pl && p[pe] != '/')
            pe++;
        size_t te = level_end(t, tl, i), ll = te - i;
        if (subscribe && ll == 1 && t[i] == '#') /* everything below: others' too */
            return i == 0 && dollar ? 0 : refuse(cf, user);
        if (!(subscribe && ll == 1 && t[i] == '+' && !(i == 0 && dollar)) &&
            (ll != pe - j || memcmp(t + i, p + j, ll) != 0))
            return 0; /* not under the prefix */
        if (te >= tl)
            return 0; /* the prefix itself, or above it */
        i = te + 1;
        j = pe + 1;
        if (pe >= pl)
            break;
    }
    /* the device level */
    size_t te = level_end(t, tl, i), ll = te - i;
    if (ll != idlen || memcmp(t + i, id, idlen) != 0)
        return refuse(cf, user); /* another id, or '+' / '#' over them */
    if (subscribe)
        return 0;
    /* its own: a reply only */
    i = te + 1;
    te = level_end(t, tl, i);
    if (te > tl || te - i != 5 || memcmp(t + i, "reply", 5) != 0)
        return refuse(cf, user);
    return 0;
}

static int guard_publish(const router_who_t *who, const uint8_t *topic, size_t len, void *ud)
{
    return !cmd_acl_refuses(ud, who->client_id, who->id_len, who->user, topic, len, 0);
}

static int guard_subscribe(const router_who_t *who, const uint8_t *filter, size_t len, void *ud)
{
    return !cmd_acl_refuses(ud, who->client_id, who->id_len, who->user, filter, len, 1);
}

int cmd_acl_register(server_t *srv, const cmd_conf_t *cf)
{
    router_guard_t g = {.publish = guard_publish, .subscribe = guard_subscribe, .ud = (void *)cf};
    return router_guard(srv, cf->prefix, &g);
}
