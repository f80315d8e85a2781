/* conf.h -- the broker's configuration: embedded defaults and the YAML file.
 *
 * conf_defaults() fills the embedded defaults (MQTT on 127.0.0.1:1883,
 * anonymous allowed).  conf_load() reads a YAML file (libyaml) over them.
 * Every key is known: an unknown key, a wrong type or an out-of-range value
 * is an error that names the file, the line and the key, and the broker
 * refuses to start.  config.example.yaml documents every key.
 *
 * Read once at start-up by the main thread, then read-only: workers read it
 * without locks.
 */
#ifndef ANTENNA_CONF_H
#define ANTENNA_CONF_H

#include <stddef.h>
#include <stdint.h>

#define CONF_MAX_LISTENERS 16

typedef struct {
    char name[32];     /* "mqtt" by default */
    char address[64];  /* IPv4 or IPv6 literal, or "0.0.0.0" / "::" */
    uint16_t port;
    uint32_t max_connections; /* 0 = unlimited */
} conf_listener_t;

typedef struct {
    uint32_t workers;          /* 0 = one per core */
    /* log */
    int log_level;             /* AN_LOG_ERROR..AN_LOG_DEBUG, see log.h */
    char log_file[256];        /* "" = stderr */
    /* listeners */
    conf_listener_t listeners[CONF_MAX_LISTENERS];
    uint32_t nlisteners;
    /* mqtt */
    uint32_t max_packet_size;  /* bytes, default 1 MiB, max 268435455 */
    uint32_t connect_timeout;  /* seconds a connection may take to CONNECT */
    uint16_t max_keepalive;    /* seconds; a longer requested keepalive is capped... */
    uint16_t max_inflight;     /* QoS 1/2 messages in flight per session */
    uint32_t max_queued;       /* messages queued per session behind the window */
    uint32_t retry_interval;   /* seconds before an unacknowledged QoS>0 message is resent with DUP */
    uint32_t session_expiry;   /* seconds an offline persistent session is kept; 0 = forever */
    uint8_t allow_anonymous;   /* clients without username */
    uint32_t sys_interval;     /* seconds between $SYS updates; 0 = off */
} conf_t;

void conf_defaults(conf_t *c);

/* Load `path` over the current values (keys absent from the file keep
 * them; a `listeners` list replaces the whole list).  Returns 0, or -1 with
 * err set to "PATH:LINE: KEY: problem" (LINE is 1-based, KEY the dotted
 * path such as "mqtt.max_inflight" or "listeners[1].port"), or
 * "PATH: cannot open: REASON"; on error *c is left unchanged. */
int conf_load(conf_t *c, const char *path, char *err, size_t errlen);

#endif
