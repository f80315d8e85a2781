/* message_log.h -- examples.message_log: the example internal consumer, a
 * module (message_log.c). */
#ifndef ANTENNA_MESSAGE_LOG_H
#define ANTENNA_MESSAGE_LOG_H

#include "module.h"

extern const module_t message_log_module;

#endif
