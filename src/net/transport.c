/* transport.c -- what every stack shares (see transport.h). */
#include "transport.h"

#include <stdio.h>

transport_t *tp_handshaker(transport_t *t)
{
    for (; t; t = t->lower)
        if (t->ops->handshake)
            return t;
    return NULL;
}

int tp_peer_cert_name(const transport_t *t, int kind, char *buf, size_t size)
{
    for (; t; t = t->lower)
        if (t->ops->peer_cert_name)
            return t->ops->peer_cert_name(t, kind, buf, size);
    return -1;
}

const char *tp_describe(const transport_t *t, char *buf, size_t size)
{
    if (t->ops->describe)
        return t->ops->describe(t, buf, size);
    snprintf(buf, size, "%s", t->ops->name);
    return buf;
}
