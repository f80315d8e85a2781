/* event_log.h -- events.log: broker events as JSON log lines (event_log.c). */
#ifndef ANTENNA_EVENT_LOG_H
#define ANTENNA_EVENT_LOG_H

#include "server.h"

/* The module (module.h): registers the handlers of the kinds in
 * srv->conf.events_log at init, before the workers start. */
extern const struct module_s event_log_module;

#endif
