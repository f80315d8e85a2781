/* sdnotify.h -- readiness, reload, stop and watchdog notifications to a
 * service manager (systemd's sd_notify protocol, sdnotify.c). */
#ifndef ANTENNA_SDNOTIFY_H
#define ANTENNA_SDNOTIFY_H

#include <stdint.h>

/* Sends one notification ("READY=1", "STOPPING=1", "WATCHDOG=1",
 * "RELOADING=1", "STATUS=...") to $NOTIFY_SOCKET.  Returns 1 when sent, 0
 * when no service manager asked for notifications (the variable is unset),
 * -1 on an error (errno set). */
int sdnotify_send(const char *state);

/* The watchdog interval asked for by the service manager ($WATCHDOG_USEC,
 * when $WATCHDOG_PID is unset or ours), in milliseconds; 0 = no watchdog. */
uint64_t sdnotify_watchdog_ms(void);

#endif
