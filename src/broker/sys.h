/* sys.h -- the $SYS/broker/... topics (the module "sys", published by
 * worker 0 on its wheel) and the memory high-water check. */
#ifndef ANTENNA_SYS_H
#define ANTENNA_SYS_H

#include "server.h"

/* The module (module.h): every $SYS topic, retained, every
 * mqtt.sys_interval seconds. */
extern const struct module_s sys_module;
/* Timer callback, every second while memory_high_water is set: compare the
 * resident set size with it and raise or clear server_t.over_high_water. */
void sys_on_mem_timer(tw_timer_t *t);
/* Resident set size of this process in bytes (0 if unknown). */
uint64_t sys_rss_bytes(void);

#endif
