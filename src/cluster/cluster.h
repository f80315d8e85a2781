/* cluster.h -- the cluster module: several antenna nodes acting as one
 * broker (docs/cluster.md is the design).
 *
 * The module `cluster` (configuration section `cluster:`) is off unless
 * cluster.node is set.  It plugs into the broker through the seams only: a
 * route owner kind (ROUTE_OWNER_NODE), an inbox kind (WM_CLUSTER), the
 * event registry and the module life cycle.  Its parts:
 *   cluster.c   the module: configuration, the member table, the link
 *               thread (an ev loop and a timer wheel), cl_post()
 *   cl_member.c membership through etcd (the etcd thread)
 *   cl_link.c   node links: sockets, handshake, pings, redial (the link thread)
 *   cl_fwd.c    forwarding: the workers' batches, the QoS 1/2 window, receiving
 *   cl_route.c  route sharing and the retained sync
 *   cl_wire.c   the links' frame codec (no I/O)
 * Their shared state and the interface between them: cl_int.h.
 */
#ifndef ANTENNA_CLUSTER_H
#define ANTENNA_CLUSTER_H

#include "module.h"

extern const module_t cluster_module;

/* cluster.node as read from the configuration c ("" when the cluster is
 * off), before the module runs: the Redis store's key prefix ({node}). */
const char *cluster_conf_node(const conf_t *c);

/* persistence.session_store: replicated, at start-up before the sessions
 * are read (persist_open, main thread): when etcd says this node's
 * sessions were adopted by its replica while it was down, they are removed
 * from st (logged).  0, or -1 when that removal failed. */
struct store;
int cluster_replica_boot(const conf_t *c, struct store *st);

#endif
