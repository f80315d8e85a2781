/* heartbeat.h -- the example module (docs/extending.md, "Writing a
 * module"): every worker publishes a liveness message on
 * heartbeat.topic/WORKER every heartbeat.interval seconds. */
#ifndef ANTENNA_HEARTBEAT_H
#define ANTENNA_HEARTBEAT_H

struct module_s;
extern const struct module_s heartbeat_module;

#endif
