/* event_log.h -- events.log: broker events as JSON log lines (event_log.c). */
#ifndef ANTENNA_EVENT_LOG_H
#define ANTENNA_EVENT_LOG_H

#include "server.h"

/* Register the handlers of the kinds in srv->conf.events_log (server_init,
 * before the workers start).  Returns 0, or -1 (logged). */
int event_log_init(server_t *srv);

#endif
