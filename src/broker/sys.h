/* sys.h -- the $SYS/broker/... topics, published by worker 0 on its wheel. */
#ifndef ANTENNA_SYS_H
#define ANTENNA_SYS_H

#include "server.h"

/* Timer callback: publish every $SYS topic (retained) and re-arm. */
void sys_on_timer(tw_timer_t *t);

#endif
