/* cl_link.c -- node links, route sharing and forwarding (cl_int.h).
 *
 * Not built yet: this file only keeps the interface of cl_int.h so that the
 * module links; the design it will follow is docs/cluster.md ("Node
 * links", "Routes", "QoS across nodes").  Until then a cluster node
 * forwards nothing and announces no routes.
 */
#include <stdio.h>

#include "cl_int.h"
#include "log.h"

int cl_links_init(cl_t *cl)
{
    snprintf(cl->link_addr, sizeof(cl->link_addr), "%s",
             cl->conf->advertise[0] ? cl->conf->advertise : cl->conf->listen);
    return 0;
}

int cl_links_start(cl_t *cl)
{
    (void)cl;
    return 0;
}

void cl_links_member_changed(cl_t *cl, int idx)
{
    (void)cl;
    (void)idx;
}

void cl_links_stop(cl_t *cl)
{
    (void)cl;
}

void cl_links_free(cl_t *cl)
{
    (void)cl;
}
