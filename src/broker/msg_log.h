/* msg_log.h -- examples.message_log: the example internal consumer
 * (msg_log.c). */
#ifndef ANTENNA_MSG_LOG_H
#define ANTENNA_MSG_LOG_H

#include "server.h"

/* Create the consumer and subscribe it to srv->conf.examples_message_log
 * (server_init; nothing when the list is empty).  Returns 0, or -1
 * (logged). */
int msg_log_init(server_t *srv);

#endif
