/* cl_member.c -- membership through etcd (cl_int.h).
 *
 * Not built yet: this file only keeps the interface of cl_int.h so that the
 * module links; the design it will follow is docs/cluster.md
 * ("Membership", "Client-id ownership").  Until then only
 * cluster.static_members are members.
 */
#include "cl_int.h"
#include "log.h"

int cl_member_start(cl_t *cl)
{
    if (cl->conf->etcd[0] != '\0')
        log_warn("cluster: membership through etcd is not built yet; static members only");
    return 0;
}

void cl_member_stop(cl_t *cl)
{
    (void)cl;
}

void cl_member_free(cl_t *cl)
{
    (void)cl;
}
