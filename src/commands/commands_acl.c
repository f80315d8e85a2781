/* commands_acl.c -- the $cmd ACL (docs/commands.md): a client subscribes
 * only to its own PREFIX/{client id}/... (no wildcard over the device
 * level, no other id) and publishes under PREFIX only to its own reply
 * topic PREFIX/{client id}/reply[/...].  Users named in
 * commands.acl_admins pass.
 *
 * What it owns: cmd_acl_s, made by the module's init (main thread, before
 * the workers run) when commands.enabled and commands.acl, and published
 * as server_t.cmd_acl; read-only after, by the workers (proto.c, at
 * SUBSCRIBE and at PUBLISH).  Off, proto.c tests one pointer; on, a
 * message costs one comparison with the prefix's first level.
 */
#include <string.h>

#include "commands.h"
#include "commands_int.h"

struct cmd_acl_s {
    const cmd_conf_t *cf;
    size_t plen;
};

struct cmd_acl_s *cmd_acl_new(const cmd_conf_t *cf)
{
    struct cmd_acl_s *a = an_calloc(1, sizeof(*a));
    a->cf = cf;
    a->plen = strlen(cf->prefix);
    return a;
}

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

int cmd_acl_refuses(const struct cmd_acl_s *a, const char *id, size_t idlen, const char *user,
                    const uint8_t *t, size_t tl, int subscribe)
{
    const char *p = a->cf->prefix;
    size_t pl = a->plen, i = 0, j = 0;
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
            return i == 0 && dollar ? 0 : refuse(a->cf, user);
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
        return refuse(a->cf, user); /* another id, or '+' / '#' over them */
    if (subscribe)
        return 0;
    /* its own: a reply only */
    i = te + 1;
    te = level_end(t, tl, i);
    if (te > tl || te - i != 5 || memcmp(t + i, "reply", 5) != 0)
        return refuse(a->cf, user);
    return 0;
}
