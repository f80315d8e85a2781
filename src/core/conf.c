/* conf.c -- embedded defaults and the YAML configuration file.
 *
 * conf_load() reads one document with libyaml's document API, then walks it
 * against static tables of known keys (struct field: key, type, offset,
 * range), so every key, type and range rule lives in one table.  The walk
 * never recurses beyond the schema, so alias cycles are harmless.  The file
 * is loaded into a copy of *c that is written back only on success.  Errors
 * name the file, the 1-based line (mark.line + 1) and the dotted key path.
 * The only state is a struct loader on conf_load()'s stack.
 *
 * A top-level key that is not in root_fields may be a module's section
 * (conf_section_add): its mapping goes to the module's load function
 * (conf_sec.c), which reads keys through the conf_sec_* readers.  They
 * build a one-entry field and call the same load_* functions
 * (cf_load_field, conf_int.h), so the rules and the error text are those
 * of every other key; a key the module did not read is unknown.
 */
#include "conf.h"
#include "conf_int.h"

#include "log.h"
#include "redis_url.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>


/* The key tables below are laid out by hand, one key per line or two
 * (clang-format would put each designated initializer on its own line). */
/* clang-format off */
#define MSIZE(st, m) sizeof(((st *)0)->m)
#define FLD(st, m, t) .key = #m, .type = (t), .off = offsetof(st, m), .size = MSIZE(st, m)
#define UINTF(st, m, lo, hi) { FLD(st, m, F_UINT), .min = (lo), .max = (hi) }
#define UINTU(st, m, lo, hi, u) { FLD(st, m, F_UINT), .min = (lo), .max = (hi), .unit = (u) }
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define ENUMF(st, m, list) { FLD(st, m, F_ENUM), .names = (list) }

static const char *const shared_strategy_names[] = {
    "round_robin", "random", "hash_clientid", "hash_topic", "sticky", NULL};
static const char *const keepalive_policy_names[] = {"refuse", "cap", NULL};
static const char *const sync_names[] = {"always", "interval", "none", NULL};
static const char *const queue_full_names[] = {"drop", "refuse", NULL};
static const char *const transport_names[] = {"tcp", "tls", "ws", "wss", NULL};
static const char *const proxy_names[] = {"off", "v1", "v2", NULL};
static const char *const tls_version_names[] = {"1.2", "1.3", NULL};
static const char *const cert_username_names[] = {"none", "cn", "san", NULL};

/* In the order of event_kind_t (src/broker/event.h), which names them with
 * this table. */
const char *const conf_event_names[] = {
    "client_connected", "client_disconnected", "auth_failed", "subscribed", "unsubscribed",
    "message_published", "message_delivered", "message_acked", "message_dropped",
    "session_created", "session_expired", "session_taken_over", "command_status",
    "device_presence", NULL};

static const struct field events_fields[] = {
    { .key = "log", .type = F_FLAGS, .off = offsetof(conf_t, events_log),
      .size = MSIZE(conf_t, events_log), .names = conf_event_names },
};


static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const log_target_names[] = {"stderr", "file", "syslog", NULL};

static const struct field log_fields[] = {
    { .key = "level", .type = F_LEVEL, .off = offsetof(conf_t, log_level),
      .size = MSIZE(conf_t, log_level) },
    { .key = "file", .type = F_STR, .off = offsetof(conf_t, log_file),
      .size = MSIZE(conf_t, log_file) },
    { .key = "format", .type = F_ENUM, .off = offsetof(conf_t, log_format),
      .size = MSIZE(conf_t, log_format), .names = log_format_names },
    { .key = "target", .type = F_ENUM, .off = offsetof(conf_t, log_target),
      .size = MSIZE(conf_t, log_target), .names = log_target_names },
};

#define APIF(m, k, t) \
    { .key = k, .type = (t), .off = offsetof(conf_t, m), .size = MSIZE(conf_t, m) }
static const struct field api_fields[] = {
    APIF(api_enabled, "enabled", F_BOOL),
    APIF(api_bind, "bind", F_ADDR),
    { .key = "port", .type = F_UINT, .off = offsetof(conf_t, api_port),
      .size = MSIZE(conf_t, api_port), .min = 0, .max = 65535 },
    APIF(api_tls_cert, "tls_cert", F_STR),
    APIF(api_tls_key, "tls_key", F_STR),
    APIF(api_keys_file, "keys_file", F_STR),
    APIF(api_users_file, "users_file", F_STR),
    APIF(api_open_health, "open_health", F_BOOL),
    APIF(api_open_metrics, "open_metrics", F_BOOL),
    { .key = "timeout_ms", .type = F_UINT, .unit = U_MS, .off = offsetof(conf_t, api_timeout_ms),
      .size = MSIZE(conf_t, api_timeout_ms), .min = 10, .max = 60000 },
    { .key = "max_connections", .type = F_UINT, .off = offsetof(conf_t, api_max_connections),
      .size = MSIZE(conf_t, api_max_connections), .min = 4, .max = 65536 },
    { .key = "max_connections_per_ip", .type = F_UINT,
      .off = offsetof(conf_t, api_max_connections_per_ip),
      .size = MSIZE(conf_t, api_max_connections_per_ip), .min = 0, .max = 65536 },
    { .key = "request_timeout_s", .type = F_UINT, .unit = U_S,
      .off = offsetof(conf_t, api_request_timeout_s),
      .size = MSIZE(conf_t, api_request_timeout_s), .min = 1, .max = 3600 },
    { .key = "min_password_iterations", .type = F_UINT,
      .off = offsetof(conf_t, api_min_password_iterations),
      .size = MSIZE(conf_t, api_min_password_iterations), .min = 1, .max = 10000000 },
};

static const struct field listener_fields[] = {
    { FLD(conf_listener_t, name, F_NAME) },
    { FLD(conf_listener_t, address, F_ADDR) },
    UINTF(conf_listener_t, port, 0, 65535),
    UINTF(conf_listener_t, max_connections, 0, UINT32_MAX),
    ENUMF(conf_listener_t, transport, transport_names),
    ENUMF(conf_listener_t, proxy_protocol, proxy_names),
    { FLD(conf_listener_t, cert_file, F_STR) },
    { FLD(conf_listener_t, key_file, F_STR) },
    { FLD(conf_listener_t, ca_file, F_STR) },
    { FLD(conf_listener_t, require_client_cert, F_BOOL) },
    ENUMF(conf_listener_t, tls_min_version, tls_version_names),
    { FLD(conf_listener_t, ciphers, F_NAME) },
    UINTU(conf_listener_t, handshake_timeout, 1, 3600, U_S),
    { FLD(conf_listener_t, ws_path, F_NAME) },
    UINTU(conf_listener_t, ws_max_frame, 16, 268435455, U_BYTES),
    ENUMF(conf_listener_t, cert_username, cert_username_names),
    { FLD(conf_listener_t, allow_anonymous, F_BOOL) },
    { .key = "ws_allowed_origins", .type = F_NAMELIST,
      .off = offsetof(conf_listener_t, ws_allowed_origins),
      .size = MSIZE(conf_listener_t, ws_allowed_origins[0]), .max = CONF_WS_MAX_ORIGINS,
      .off2 = offsetof(conf_listener_t, nws_allowed_origins) },
};
#define LISTENER_PORT_BIT (1u << 2) /* index of "port" above: required */
#define LISTENER_CERT_BIT (1u << 6)
#define LISTENER_KEY_BIT (1u << 7)
#define LISTENER_CA_BIT (1u << 8)
#define LISTENER_REQCERT_BIT (1u << 9)
#define LISTENER_WSPATH_BIT (1u << 13)
#define LISTENER_WSMAX_BIT (1u << 14)
#define LISTENER_CERTUSER_BIT (1u << 15)
#define LISTENER_WSORIGINS_BIT (1u << 17)

/* A serialized origin (RFC 6454): "http://" or "https://", a host, an
 * optional ":port"; nothing else (no path, not even "/"). */
static int origin_valid(const char *o)
{
    const char *h = strncasecmp(o, "https://", 8) == 0  ? o + 8
                    : strncasecmp(o, "http://", 7) == 0 ? o + 7
                                                        : NULL;
    if (h == NULL || *h == '\0' || *h == ':')
        return 0;
    for (const char *p = h; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("/?#@\\", *p))
            return 0;
    const char *colon = strrchr(h, ':');
    if (colon && h[0] != '[') {
        if (colon[1] == '\0' || strlen(colon + 1) > 5)
            return 0;
        for (const char *p = colon + 1; *p; p++)
            if (*p < '0' || *p > '9')
                return 0;
    }
    return 1;
}

static const struct field mqtt_fields[] = {
    UINTU(conf_t, max_packet_size, 16, 268435455, U_BYTES),
    UINTF(conf_t, max_client_id_length, 1, 65535),
    UINTU(conf_t, connect_timeout, 1, 3600, U_S),
    UINTU(conf_t, max_keepalive, 1, 65535, U_S),
    UINTF(conf_t, max_inflight, 1, 65535),
    UINTF(conf_t, max_queued, 0, 10000000),
    UINTU(conf_t, retry_interval, 1, 3600, U_S),
    UINTU(conf_t, session_expiry, 0, UINT32_MAX, U_S),
    { FLD(conf_t, allow_anonymous, F_BOOL) },
    UINTU(conf_t, sys_interval, 0, 86400, U_S),
    UINTF(conf_t, max_qos, 0, 2),
    { FLD(conf_t, retain_available, F_BOOL) },
    { FLD(conf_t, wildcard_subscriptions, F_BOOL) },
    { FLD(conf_t, shared_subscriptions, F_BOOL) },
    { FLD(conf_t, subscription_identifiers, F_BOOL) },
    UINTF(conf_t, topic_alias_max, 0, 65535),
    UINTF(conf_t, receive_maximum, 1, 65535),
    { FLD(conf_t, server_reference, F_STR) },
    { FLD(conf_t, allow_sys_publish, F_BOOL) },
    ENUMF(conf_t, shared_strategy, shared_strategy_names),
    ENUMF(conf_t, keepalive_over_max, keepalive_policy_names),
};

static const struct field limits_fields[] = {
    UINTF(conf_t, max_connections, 0, UINT32_MAX),
    UINTF(conf_t, max_connection_rate, 0, UINT32_MAX),
    UINTF(conf_t, max_message_rate, 0, UINT32_MAX),
    UINTU(conf_t, max_byte_rate, 0, UINT32_MAX, U_BYTES),
    UINTF(conf_t, max_subscriptions, 0, UINT32_MAX),
    UINTF(conf_t, max_retained, 0, UINT32_MAX),
    UINTF(conf_t, max_sessions, 0, UINT32_MAX),
    UINTF(conf_t, max_awaiting_rel, 1, 65535),
    UINTF(conf_t, max_topic_levels, 1, 65535),
    UINTF(conf_t, max_topic_length, 1, 65535),
    UINTU(conf_t, max_queued_bytes, 0, UINT64_MAX, U_BYTES),
    UINTF(conf_t, publisher_backpressure, 0, 10000000),
    { .key = "queue_full", .type = F_ENUM, .off = offsetof(conf_t, queue_full_policy),
      .size = MSIZE(conf_t, queue_full_policy), .names = queue_full_names },
    UINTU(conf_t, slow_subscriber_timeout, 0, 86400, U_S),
    UINTU(conf_t, max_output_buffer, 1024, UINT32_MAX, U_BYTES),
    UINTU(conf_t, memory_high_water, 0, UINT64_MAX, U_BYTES),
};

static const char *const store_backend_names[] = {"rocksdb", "redis", NULL};
static const char *const session_store_names[] = {"local", "replicated", NULL};

#define PREDIS(m, t) .key = #m, .type = (t), .off = offsetof(conf_t, persistence_redis.m), \
                     .size = MSIZE(conf_t, persistence_redis.m)
static const struct field persistence_redis_fields[] = {
    { PREDIS(url, F_STR) },
    { PREDIS(prefix, F_STR) },
    { PREDIS(connect_timeout_ms, F_UINT), .min = 1, .max = 600000, .unit = U_MS },
    { PREDIS(timeout_ms, F_UINT), .min = 1, .max = 600000, .unit = U_MS },
    { PREDIS(min_replicas, F_UINT), .min = 0, .max = 16 },
};

static const struct field persistence_fields[] = {
    { .key = "enabled", .type = F_BOOL, .off = offsetof(conf_t, persistence_enabled),
      .size = MSIZE(conf_t, persistence_enabled) },
    { .key = "dir", .type = F_NAME, .off = offsetof(conf_t, data_dir),
      .size = MSIZE(conf_t, data_dir) },
    { .key = "sync", .type = F_ENUM, .off = offsetof(conf_t, persistence_sync),
      .size = MSIZE(conf_t, persistence_sync), .names = sync_names },
    UINTU(conf_t, sync_interval_ms, 1, 3600000, U_MS),
    { .key = "backend", .type = F_ENUM, .off = offsetof(conf_t, persistence_backend),
      .size = MSIZE(conf_t, persistence_backend), .names = store_backend_names },
    { .key = "session_store", .type = F_ENUM, .off = offsetof(conf_t, session_store),
      .size = MSIZE(conf_t, session_store), .names = session_store_names },
    { .key = "redis", .type = F_SECTION, .sub = persistence_redis_fields,
      .nsub = NELEM(persistence_redis_fields) },
};

static const char *const auth_format_names[] = {"json", "opa", NULL};
static const char *const auth_on_error_names[] = {"deny", "pass", NULL};

/* auth.http and auth.redis: members of conf_t's auth_http / auth_redis. */
#define AUTHF(sub, m, t) .key = #m, .type = (t), .off = offsetof(conf_t, sub.m), \
                         .size = MSIZE(conf_t, sub.m)
static const struct field auth_http_fields[] = {
    { AUTHF(auth_http, url, F_STR) },
    { .key = "urls", .type = F_NAMELIST, .off = offsetof(conf_t, auth_http.urls),
      .size = MSIZE(conf_t, auth_http.urls[0]), .max = CONF_AUTH_HTTP_MAX_URLS,
      .off2 = offsetof(conf_t, auth_http.nurls) },
    { AUTHF(auth_http, ca_file, F_STR) },
    { AUTHF(auth_http, format, F_ENUM), .names = auth_format_names },
    { AUTHF(auth_http, on_error, F_ENUM), .names = auth_on_error_names },
    { AUTHF(auth_http, timeout_ms, F_UINT), .min = 1, .max = 600000, .unit = U_MS },
    { AUTHF(auth_http, connect_timeout_ms, F_UINT), .min = 1, .max = 600000, .unit = U_MS },
    { AUTHF(auth_http, cache_ttl_ms, F_UINT), .min = 0, .max = 86400000, .unit = U_MS },
    { AUTHF(auth_http, cache_size, F_UINT), .min = 1, .max = 10000000 },
    { AUTHF(auth_http, pool_size, F_UINT), .min = 1, .max = 1024 },
    { AUTHF(auth_http, queue_size, F_UINT), .min = 1, .max = 1000000 },
};
static const struct field auth_redis_fields[] = {
    { AUTHF(auth_redis, host, F_NAME) },
    { AUTHF(auth_redis, port, F_UINT), .min = 1, .max = 65535 },
    { AUTHF(auth_redis, password, F_STR) },
    { AUTHF(auth_redis, db, F_UINT), .min = 0, .max = 65535 },
    { AUTHF(auth_redis, prefix, F_STR) },
    { AUTHF(auth_redis, pool_size, F_UINT), .min = 1, .max = 64 },
    { AUTHF(auth_redis, timeout_ms, F_UINT), .min = 1, .max = 600000, .unit = U_MS },
    { AUTHF(auth_redis, queue_size, F_UINT), .min = 1, .max = 1000000 },
    { AUTHF(auth_redis, on_error, F_ENUM), .names = auth_on_error_names },
};

static const char *const policy_names[] = {"deny", "allow", "auto", NULL};
static const char *const cid_binding_names[] = {"none", "username", "prefix_username", NULL};
static const char *const jwt_alg_names[] = {"HS256", "RS256", "ES256", NULL};
static const char *const jwt_field_names[] = {"password", "username", NULL};
static const char *const pwcache_names[] = {"memory", "persistent", NULL};

/* auth.jwt, auth.ban (members of conf_t's auth.jwt / auth.ban). */
static const struct field auth_jwt_fields[] = {
    { AUTHF(auth.jwt, alg, F_ENUM), .names = jwt_alg_names },
    { AUTHF(auth.jwt, field, F_ENUM), .names = jwt_field_names },
    { AUTHF(auth.jwt, secret, F_STR) },
    { AUTHF(auth.jwt, public_key_file, F_STR) },
    { AUTHF(auth.jwt, jwks_file, F_STR) },
    { AUTHF(auth.jwt, username_claim, F_NAME) },
    { AUTHF(auth.jwt, acl_claim, F_STR) },
    { AUTHF(auth.jwt, leeway_s, F_UINT), .min = 0, .max = 3600, .unit = U_S },
    { AUTHF(auth.jwt, require_exp, F_BOOL) },
    { AUTHF(auth.jwt, audience, F_STR) },
    { AUTHF(auth.jwt, issuer, F_STR) },
    { .key = "required_claims", .type = F_NAMELIST,
      .off = offsetof(conf_t, auth.jwt.required_claims),
      .size = MSIZE(conf_t, auth.jwt.required_claims[0]), .max = CONF_JWT_MAX_CLAIMS,
      .off2 = offsetof(conf_t, auth.jwt.nrequired_claims) },
};
static const struct field auth_ban_fields[] = {
    { AUTHF(auth.ban, max_failures, F_UINT), .min = 0, .max = 1000000 },
    { AUTHF(auth.ban, window_s, F_UINT), .min = 1, .max = 86400, .unit = U_S },
    { AUTHF(auth.ban, ban_s, F_UINT), .min = 1, .max = 30 * 86400, .unit = U_S },
    { AUTHF(auth.ban, delay_ms, F_UINT), .min = 0, .max = 60000, .unit = U_MS },
    { AUTHF(auth.ban, table_size, F_UINT), .min = 16, .max = 10000000 },
    { AUTHF(auth.ban, loopback, F_BOOL) },
};

static const struct field auth_fields[] = {
    { .key = "chain", .type = F_NAMELIST, .off = offsetof(conf_t, auth.chain),
      .size = MSIZE(conf_t, auth.chain[0]), .max = CONF_AUTH_MAX_CHAIN,
      .off2 = offsetof(conf_t, auth.nchain) },
    { .key = "default", .type = F_ENUM, .off = offsetof(conf_t, auth.default_policy),
      .size = MSIZE(conf_t, auth.default_policy), .names = policy_names },
    { AUTHF(auth, acl_file, F_STR) },
    { AUTHF(auth, acl_default, F_ENUM), .names = policy_names },
    { AUTHF(auth, acl_cache_size, F_UINT), .min = 0, .max = 65536 },
    { AUTHF(auth, client_id_binding, F_ENUM), .names = cid_binding_names },
    { AUTHF(auth, password_file, F_STR) },
    { AUTHF(auth, password_threads, F_UINT), .min = 1, .max = 64 },
    { AUTHF(auth, password_queue, F_UINT), .min = 1, .max = 1000000 },
    { AUTHF(auth, password_cache_ttl_s, F_UINT), .min = 0, .max = 86400, .unit = U_S },
    { AUTHF(auth, password_cache_size, F_UINT), .min = 1, .max = 10000000 },
    { AUTHF(auth, password_cache, F_ENUM), .names = pwcache_names },
    { AUTHF(auth, password_cache_persistent_ttl_s, F_UINT), .min = 1, .max = 30 * 86400,
      .unit = U_S },
    { .key = "jwt", .type = F_SECTION, .sub = auth_jwt_fields, .nsub = NELEM(auth_jwt_fields) },
    { .key = "ban", .type = F_SECTION, .sub = auth_ban_fields, .nsub = NELEM(auth_ban_fields) },
    { .key = "http", .type = F_SECTION, .sub = auth_http_fields,
      .nsub = NELEM(auth_http_fields) },
    { .key = "redis", .type = F_SECTION, .sub = auth_redis_fields,
      .nsub = NELEM(auth_redis_fields) },
};

static const struct field root_fields[] = {
    UINTF(conf_t, workers, 0, 256),
    UINTF(conf_t, workers_coalesce_us, 0, 10000),
    { FLD(conf_t, workers_migrate, F_BOOL) },
    { FLD(conf_t, workers_consolidate, F_BOOL) },
    UINTF(conf_t, workers_consolidate_below, 0, 100),
    UINTF(conf_t, workers_consolidate_above, 1, 100),
    { .key = "log", .type = F_SECTION, .sub = log_fields, .nsub = NELEM(log_fields) },
    { .key = "listeners", .type = F_LISTENERS },
    { .key = "mqtt", .type = F_SECTION, .sub = mqtt_fields, .nsub = NELEM(mqtt_fields) },
    { .key = "limits", .type = F_SECTION, .sub = limits_fields, .nsub = NELEM(limits_fields) },
    { .key = "persistence", .type = F_SECTION, .sub = persistence_fields,
      .nsub = NELEM(persistence_fields) },
    { .key = "auth", .type = F_SECTION, .sub = auth_fields, .nsub = NELEM(auth_fields) },
    { .key = "api", .type = F_SECTION, .sub = api_fields, .nsub = NELEM(api_fields) },
    { .key = "events", .type = F_SECTION, .sub = events_fields, .nsub = NELEM(events_fields) },
};
/* clang-format on */

/* load_map() tracks the keys seen in a uint32_t. */
_Static_assert(NELEM(root_fields) <= 32 && NELEM(log_fields) <= 32 &&
                   NELEM(listener_fields) <= 32 && NELEM(mqtt_fields) <= 32 &&
                   NELEM(limits_fields) <= 32 && NELEM(auth_fields) <= 32,
               "table too large");

static const conf_listener_t default_listener = {
    .name = "mqtt",
    .address = "127.0.0.1",
    .port = 1883,
    .max_connections = 0,
    .transport = CONF_TRANSPORT_TCP,
    .proxy_protocol = CONF_PROXY_OFF,
    .require_client_cert = 0,
    .tls_min_version = CONF_TLS_1_2,
    .handshake_timeout = 10,
    .ciphers = CONF_DEFAULT_CIPHERS,
    .ws_path = "/mqtt",
    .ws_max_frame = 1048576,
    .allow_anonymous = CONF_ANON_INHERIT,
};


int cf_is_root_key(const char *name)
{
    for (size_t i = 0; i < NELEM(root_fields); i++)
        if (strcmp(root_fields[i].key, name) == 0)
            return 1;
    return 0;
}

void conf_defaults(conf_t *c)
{
    memset(c, 0, sizeof(*c));
    c->workers = 0;
    c->workers_coalesce_us = 0; /* opt-in: docs/benchmarks.md, issue 15 item 2 */
    c->workers_migrate = 1;
    c->workers_consolidate = 1; /* light load on worker 0 (migrate.h) */
    c->workers_consolidate_below = 35;
    c->workers_consolidate_above = 85;
    c->log_level = AN_LOG_INFO;
    c->log_file[0] = '\0';
    c->listeners[0] = default_listener;
    c->nlisteners = 1;
    c->max_packet_size = 1048576;
    c->max_client_id_length = 256;
    c->connect_timeout = 10;
    c->max_keepalive = 65535;
    c->max_inflight = 32;
    c->max_queued = 1000;
    c->retry_interval = 20;
    c->session_expiry = 7200;
    c->allow_anonymous = 1;
    c->sys_interval = 10;
    c->api_enabled = 1;
    snprintf(c->api_bind, sizeof(c->api_bind), "127.0.0.1");
    c->api_port = 18083;
    c->api_open_health = 1;
    c->api_open_metrics = 0;
    c->api_timeout_ms = 2000;
    c->api_max_connections = 256;
    c->api_max_connections_per_ip = 16;
    c->api_request_timeout_s = 10;
    c->api_min_password_iterations = 1000;
    c->max_qos = 2;
    c->retain_available = 1;
    c->wildcard_subscriptions = 1;
    c->shared_subscriptions = 1;
    c->subscription_identifiers = 1;
    c->topic_alias_max = 10;
    c->receive_maximum = 100;
    c->shared_strategy = CONF_SHARED_ROUND_ROBIN;
    c->keepalive_over_max = CONF_KEEPALIVE_REFUSE;
    c->max_topic_levels = 128;
    c->max_topic_length = 4096;
    /* finite by default: what one client or the whole broker may hold
     * (issue 13); 0 stays "unlimited" for those who set it */
    c->max_subscriptions = 1000;
    c->max_retained = 1000000;
    c->max_sessions = 1000000;
    c->max_awaiting_rel = 1000;
    c->max_queued_bytes = 64u << 20;
    c->publisher_backpressure = 200;
    c->slow_subscriber_timeout = 60;
    c->max_output_buffer = 262144;
    c->persistence_enabled = 1;
    snprintf(c->data_dir, sizeof(c->data_dir), "%s", "data");
    c->persistence_sync = 0; /* always */
    c->sync_interval_ms = 1000;
    c->persistence_backend = CONF_STORE_ROCKSDB;
    snprintf(c->persistence_redis.url, sizeof(c->persistence_redis.url), "%s",
             "redis://127.0.0.1:6379/0");
    snprintf(c->persistence_redis.prefix, sizeof(c->persistence_redis.prefix), "%s",
             "antenna:{node}:");
    c->persistence_redis.connect_timeout_ms = 2000;
    c->persistence_redis.timeout_ms = 5000;
    /* auth */
    c->auth.default_policy = CONF_POLICY_AUTO;
    c->auth.acl_default = CONF_POLICY_AUTO;
    c->auth.acl_cache_size = 64;
    c->auth.jwt.alg = CONF_JWT_HS256;
    c->auth.jwt.field = CONF_JWT_FROM_PASSWORD;
    snprintf(c->auth.jwt.username_claim, sizeof(c->auth.jwt.username_claim), "%s", "sub");
    snprintf(c->auth.jwt.acl_claim, sizeof(c->auth.jwt.acl_claim), "%s", "acl");
    c->auth.jwt.leeway_s = 0;
    c->auth.jwt.require_exp = 1;
    c->auth.password_threads = 2;
    c->auth.password_queue = 10000;
    c->auth.password_cache_ttl_s = 300;
    c->auth.password_cache_size = 100000;
    c->auth.password_cache_persistent_ttl_s = 7 * 86400;
    c->auth.ban.max_failures = 10; /* on non-loopback listeners (auth.ban.loopback) */
    c->auth.ban.loopback = 0;
    c->auth.ban.window_s = 60;
    c->auth.ban.ban_s = 300;
    c->auth.ban.delay_ms = 1000;
    c->auth.ban.table_size = 4096;
    /* auth.http */
    c->auth_http.format = CONF_AUTH_FORMAT_JSON;
    c->auth_http.on_error = CONF_AUTH_ON_ERROR_DENY;
    c->auth_http.timeout_ms = 2000;
    c->auth_http.connect_timeout_ms = 1000;
    c->auth_http.cache_ttl_ms = 60000;
    c->auth_http.cache_size = 100000;
    c->auth_http.pool_size = 8;
    c->auth_http.queue_size = 10000;
    /* auth.redis */
    snprintf(c->auth_redis.host, sizeof(c->auth_redis.host), "%s", "127.0.0.1");
    c->auth_redis.port = 6379;
    snprintf(c->auth_redis.prefix, sizeof(c->auth_redis.prefix), "%s", "antenna:");
    c->auth_redis.pool_size = 4;
    c->auth_redis.timeout_ms = 1000;
    c->auth_redis.queue_size = 10000;
    c->auth_redis.on_error = CONF_AUTH_ON_ERROR_DENY;
}

/* ---- errors ---- */

static void put_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* "PATH:LINE: KEY: problem"; always returns -1. */
int cf_vfail(struct loader *ld, const yaml_node_t *at, const char *key, const char *fmt, va_list ap)
{
    if (ld->err == NULL || ld->errlen == 0)
        return -1;
    int n = snprintf(ld->err, ld->errlen, "%s:%zu: %s: ", ld->path, (size_t)at->start_mark.line + 1,
                     key[0] ? key : "top level");
    if (n < 0 || (size_t)n >= ld->errlen)
        return -1;
    vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
    return -1;
}

int cf_fail(struct loader *ld, const yaml_node_t *at, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cf_vfail(ld, at, key, fmt, ap);
    va_end(ap);
    return -1;
}

/* "unknown key", with the nearest known key when there is one. */
int cf_unknown_key(struct loader *ld, const yaml_node_t *at, const char *path, const an_near_t *nr)
{
    if (nr && nr->best)
        return cf_fail(ld, at, path, "unknown key (did you mean \"%s\"?)", nr->best);
    return cf_fail(ld, at, path, "unknown key");
}

/* 1-based line of byte `offset` in f (reader errors carry no mark). */
static size_t line_at_offset(FILE *f, size_t offset)
{
    size_t line = 1;
    if (fseek(f, 0, SEEK_SET) != 0)
        return line;
    for (size_t i = 0; i < offset; i++) {
        int ch = getc(f);
        if (ch == EOF)
            break;
        if (ch == '\n')
            line++;
    }
    return line;
}

static void yaml_fail(struct loader *ld, yaml_parser_t *p, FILE *f)
{
    const char *problem = p->problem ? p->problem : "syntax error";
    size_t line = (size_t)p->problem_mark.line + 1;

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        put_err(ld->err, ld->errlen, "%s: yaml: out of memory", ld->path);
        return;
    case YAML_READER_ERROR:
        if (ferror(f)) {
            put_err(ld->err, ld->errlen, "%s: cannot read: %s", ld->path, strerror(errno));
            return;
        }
        line = line_at_offset(f, p->problem_offset);
        break;
    default:
        break;
    }
    if (p->context)
        put_err(ld->err, ld->errlen, "%s:%zu: yaml: %s (%s at line %zu)", ld->path, line, problem,
                p->context, (size_t)p->context_mark.line + 1);
    else
        put_err(ld->err, ld->errlen, "%s:%zu: yaml: %s", ld->path, line, problem);
}

/* ---- scalars ---- */

const char *cf_node_kind(const yaml_node_t *n)
{
    switch (n->type) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a sequence";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

const char *cf_sval(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static int is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* An empty value, "~" or "null" (unquoted). */
int cf_is_null(const yaml_node_t *n)
{
    if (!is_plain(n))
        return 0;
    const char *s = cf_sval(n);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

/* val (the digits before `suffix`) times the unit's factor, in the key's
 * unit.  0, or -1 for an unknown suffix or a duration finer than the key's
 * unit.  *overflow is set when the result does not fit. */
static int apply_unit(uint8_t unit, const char *suffix, uint64_t *val, int *overflow)
{
    typedef struct {
        const char *name;
        uint64_t factor;
    } unit_name_t;
    static const unit_name_t sizes[] = {
        {"b", 1},           {"k", 1ull << 10},   {"kb", 1ull << 10},  {"kib", 1ull << 10},
        {"m", 1ull << 20},  {"mb", 1ull << 20},  {"mib", 1ull << 20}, {"g", 1ull << 30},
        {"gb", 1ull << 30}, {"gib", 1ull << 30}, {"t", 1ull << 40},   {"tb", 1ull << 40},
        {"tib", 1ull << 40}};
    static const unit_name_t durations_ms[] = {{"ms", 1},      {"s", 1000},    {"m", 60000},
                                               {"min", 60000}, {"h", 3600000}, {"d", 86400000}};
    const unit_name_t *tab = unit == U_BYTES ? sizes : durations_ms;
    size_t n = unit == U_BYTES ? sizeof(sizes) / sizeof(sizes[0])
                               : sizeof(durations_ms) / sizeof(durations_ms[0]);
    uint64_t factor = 0;
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(suffix, tab[i].name) == 0) {
            factor = tab[i].factor;
            break;
        }
    if (factor == 0)
        return -1;
    uint64_t per = unit == U_S ? 1000 : 1; /* durations are counted in ms */
    if (*val && factor > UINT64_MAX / *val) {
        *overflow = 1;
        return 0;
    }
    uint64_t x = *val * factor;
    if (x % per)
        return -1;
    *val = x / per;
    return 0;
}

static int load_uint(struct loader *ld, const struct field *f, const yaml_node_t *k,
                     const yaml_node_t *v, void *base, const char *path)
{
    if (v->type != YAML_SCALAR_NODE)
        return cf_fail(ld, k, path, "expected an integer, got %s", cf_node_kind(v));
    const char *s = cf_sval(v);
    size_t len = v->data.scalar.length;
    if (!is_plain(v))
        return cf_fail(ld, v, path, "expected an integer, got a quoted string");
    if (len == 0)
        return cf_fail(ld, v, path, "expected an integer, got an empty value");
    uint64_t val = 0;
    int overflow = 0;
    size_t i = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (val > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            val = val * 10 + d;
    }
    if (i < len) {
        static const char *const wanted[] = {
            "an integer", "an integer or a size (256KB, 64MiB)",
            "an integer (seconds) or a duration (30s, 15m, 2h, 7d)",
            "an integer (ms) or a duration (500ms, 30s, 2h)"};
        if (i == 0 || f->unit == U_NONE)
            return cf_fail(ld, v, path, "expected %s, got \"%.40s\"", wanted[f->unit], s);
        if (apply_unit(f->unit, s + i, &val, &overflow) < 0)
            return cf_fail(ld, v, path, "\"%.40s\": %s", s,
                           f->unit == U_BYTES
                               ? "unknown size unit (B, K, KB, KiB, M, MB, MiB, G, T)"
                           : f->unit == U_S ? "not a whole number of seconds, or an unknown unit "
                                              "(ms, s, m, min, h, d)"
                                            : "unknown duration unit (ms, s, m, min, h, d)");
    }
    if (i > 1 && s[0] == '0')
        return cf_fail(ld, v, path, "\"%.40s\": leading zeros are not allowed", s);
    if (overflow || val < f->min || val > f->max)
        return cf_fail(ld, v, path, "%.40s is out of range %llu..%llu", s,
                       (unsigned long long)f->min, (unsigned long long)f->max);

    unsigned char *p = (unsigned char *)base + f->off;
    switch (f->size) {
    case 1: {
        uint8_t x = (uint8_t)val;
        memcpy(p, &x, 1);
        break;
    }
    case 2: {
        uint16_t x = (uint16_t)val;
        memcpy(p, &x, 2);
        break;
    }
    case 4: {
        uint32_t x = (uint32_t)val;
        memcpy(p, &x, 4);
        break;
    }
    default:
        memcpy(p, &val, sizeof(val));
        break;
    }
    return 0;
}

static int load_bool(struct loader *ld, const struct field *f, const yaml_node_t *k,
                     const yaml_node_t *v, void *base, const char *path)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};

    if (v->type != YAML_SCALAR_NODE)
        return cf_fail(ld, k, path, "expected true or false, got %s", cf_node_kind(v));
    for (size_t i = 0; is_plain(v) && i < NELEM(yes); i++) {
        int b = strcasecmp(cf_sval(v), yes[i]) == 0  ? 1
                : strcasecmp(cf_sval(v), no[i]) == 0 ? 0
                                                     : -1;
        if (b >= 0) {
            *((uint8_t *)base + f->off) = (uint8_t)b;
            return 0;
        }
    }
    return cf_fail(ld, v, path, "expected true or false (yes/no, on/off), got \"%.40s\"",
                   cf_sval(v));
}

/* F_STR, F_NAME, F_ADDR: any scalar style; an unquoted null is "". */
static int load_str(struct loader *ld, const struct field *f, const yaml_node_t *k,
                    const yaml_node_t *v, void *base, const char *path)
{
    if (v->type != YAML_SCALAR_NODE)
        return cf_fail(ld, k, path, "expected a string, got %s", cf_node_kind(v));
    const char *s = cf_is_null(v) ? "" : cf_sval(v);
    size_t len = cf_is_null(v) ? 0 : v->data.scalar.length;
    if (strlen(s) != len)
        return cf_fail(ld, v, path, "contains a NUL character");
    if (len >= f->size)
        return cf_fail(ld, v, path, "too long (%zu characters, max %zu)", len, f->size - 1);
    if (f->type == F_NAME && len == 0)
        return cf_fail(ld, v, path, "must not be empty");
    if (f->type == F_ADDR) {
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET, s, buf) != 1 && inet_pton(AF_INET6, s, buf) != 1)
            return cf_fail(ld, v, path, "\"%.64s\" is not an IPv4 or IPv6 address", s);
    }
    memcpy((char *)base + f->off, s, len + 1);
    return 0;
}

static int load_level(struct loader *ld, const struct field *f, const yaml_node_t *k,
                      const yaml_node_t *v, void *base, const char *path)
{
    if (v->type != YAML_SCALAR_NODE)
        return cf_fail(ld, k, path, "expected a level name, got %s", cf_node_kind(v));
    int level = log_level_parse(cf_sval(v));
    if (level < 0)
        return cf_fail(ld, v, path, "unknown level \"%.40s\" (error, warn, info or debug)",
                       cf_sval(v));
    memcpy((char *)base + f->off, &level, sizeof(level));
    return 0;
}

static int load_enum(struct loader *ld, const struct field *f, const yaml_node_t *k,
                     const yaml_node_t *v, void *base, const char *path)
{
    if (v->type != YAML_SCALAR_NODE)
        return cf_fail(ld, k, path, "expected a name, got %s", cf_node_kind(v));
    for (uint8_t i = 0; f->names[i]; i++)
        if (strcmp(cf_sval(v), f->names[i]) == 0) {
            memcpy((char *)base + f->off, &i, sizeof(i));
            return 0;
        }
    char list[160] = "";
    for (size_t i = 0; f->names[i]; i++) {
        size_t used = strlen(list);
        snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "", f->names[i]);
    }
    return cf_fail(ld, v, path, "unknown value \"%.40s\" (one of: %s)", cf_sval(v), list);
}

/* ---- mappings and the listener list ---- */


/* out = a + b, cut to KEYPATH_LEN - 1 characters; out may be a. */
void cf_key_join(char *out, const char *a, const char *b)
{
    size_t la = strnlen(a, KEYPATH_LEN - 1);
    size_t lb = strnlen(b, KEYPATH_LEN - 1 - la);
    memmove(out, a, la);
    memcpy(out + la, b, lb);
    out[la + lb] = '\0';
}

static int load_map(struct loader *ld, const yaml_node_t *at, const yaml_node_t *node,
                    const struct field *tab, size_t n, void *base, const char *prefix,
                    uint32_t *seen_out);

/* Rules across the keys of one listener.  `seen` tells which keys the file
 * set, so the error can point at the key's own line. */
const yaml_node_t *cf_key_node(struct loader *ld, const yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp(cf_sval(k), key) == 0)
            return k;
    }
    return map;
}

static int listener_check(struct loader *ld, const yaml_node_t *item, const conf_listener_t *l,
                          const char *ipath, uint32_t seen)
{
    char kpath[KEYPATH_LEN];
    int ws = l->transport == CONF_TRANSPORT_WS || l->transport == CONF_TRANSPORT_WSS;
    if (ws) {
        /* an origin-form path: "/" then visible ASCII, no query */
        const char *p = l->ws_path;
        int ok = p[0] == '/';
        for (; ok && *p; p++)
            ok = *p > 0x20 && *p < 0x7f && *p != '?' && *p != '#';
        if (!ok) {
            cf_key_join(kpath, ipath, ".ws_path");
            return cf_fail(ld, cf_key_node(ld, item, "ws_path"), kpath,
                           "expected a path starting with \"/\" (no spaces, query or fragment)");
        }
        for (uint32_t i = 0; i < l->nws_allowed_origins; i++)
            if (!origin_valid(l->ws_allowed_origins[i])) {
                cf_key_join(kpath, ipath, ".ws_allowed_origins");
                return cf_fail(ld, cf_key_node(ld, item, "ws_allowed_origins"), kpath,
                               "\"%.60s\" is not an origin (http:// or https://, a host, an "
                               "optional :port, no path)",
                               l->ws_allowed_origins[i]);
            }
    } else if (seen & (LISTENER_WSPATH_BIT | LISTENER_WSMAX_BIT | LISTENER_WSORIGINS_BIT)) {
        cf_key_join(kpath, ipath,
                    (seen & LISTENER_WSPATH_BIT)  ? ".ws_path"
                    : (seen & LISTENER_WSMAX_BIT) ? ".ws_max_frame"
                                                  : ".ws_allowed_origins");
        return cf_fail(ld, cf_key_node(ld, item, strrchr(kpath, '.') + 1), kpath,
                       "only meaningful with transport: ws or wss");
    }
    if (l->transport == CONF_TRANSPORT_TLS || l->transport == CONF_TRANSPORT_WSS) {
        if (!(seen & LISTENER_CERT_BIT) || l->cert_file[0] == '\0') {
            cf_key_join(kpath, ipath, ".cert_file");
            return cf_fail(ld, cf_key_node(ld, item, "cert_file"), kpath,
                           "required when transport is tls or wss");
        }
        if (!(seen & LISTENER_KEY_BIT) || l->key_file[0] == '\0') {
            cf_key_join(kpath, ipath, ".key_file");
            return cf_fail(ld, cf_key_node(ld, item, "key_file"), kpath,
                           "required when transport is tls or wss");
        }
        if (l->require_client_cert && l->ca_file[0] == '\0') {
            cf_key_join(kpath, ipath, ".ca_file");
            return cf_fail(ld, cf_key_node(ld, item, "require_client_cert"), kpath,
                           "required when require_client_cert is true");
        }
        if (l->cert_username != CONF_CERT_USER_NONE && l->ca_file[0] == '\0') {
            cf_key_join(kpath, ipath, ".ca_file");
            return cf_fail(ld, cf_key_node(ld, item, "cert_username"), kpath,
                           "required when cert_username is cn or san (client certificates "
                           "are verified against it)");
        }
    } else if (seen & (LISTENER_CERT_BIT | LISTENER_KEY_BIT | LISTENER_CA_BIT |
                       LISTENER_REQCERT_BIT | LISTENER_CERTUSER_BIT)) {
        cf_key_join(kpath, ipath,
                    (seen & LISTENER_CERT_BIT)      ? ".cert_file"
                    : (seen & LISTENER_KEY_BIT)     ? ".key_file"
                    : (seen & LISTENER_CA_BIT)      ? ".ca_file"
                    : (seen & LISTENER_REQCERT_BIT) ? ".require_client_cert"
                                                    : ".cert_username");
        return cf_fail(ld, cf_key_node(ld, item, strrchr(kpath, '.') + 1), kpath,
                       "only meaningful with transport: tls or wss");
    }
    return 0;
}

static int load_listeners(struct loader *ld, const yaml_node_t *k, const yaml_node_t *v,
                          const char *path)
{
    conf_t *c = ld->c;
    if (cf_is_null(v))
        return cf_fail(ld, k, path, "the listener list is empty");
    if (v->type != YAML_SEQUENCE_NODE)
        return cf_fail(ld, k, path, "expected a sequence of listeners, got %s", cf_node_kind(v));
    yaml_node_item_t *start = v->data.sequence.items.start;
    size_t count = (size_t)(v->data.sequence.items.top - start);
    if (count == 0)
        return cf_fail(ld, v, path, "the listener list is empty");

    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, start[i]);
        char ipath[KEYPATH_LEN], index[24];
        if (item == NULL)
            return cf_fail(ld, v, path, "internal error: missing node");
        if (i >= CONF_MAX_LISTENERS)
            return cf_fail(ld, item, path, "too many listeners (max %d)", CONF_MAX_LISTENERS);
        snprintf(index, sizeof(index), "[%zu]", i);
        cf_key_join(ipath, path, index);

        conf_listener_t *l = &c->listeners[i];
        uint32_t seen = 0;
        *l = default_listener;
        if (load_map(ld, item, item, listener_fields, NELEM(listener_fields), l, ipath, &seen) < 0)
            return -1;
        if (!(seen & LISTENER_PORT_BIT)) {
            char ppath[KEYPATH_LEN];
            cf_key_join(ppath, ipath, ".port");
            return cf_fail(ld, item, ppath, "missing (every listener needs a port)");
        }
        if (listener_check(ld, item, l, ipath, seen) < 0)
            return -1;
    }
    c->nlisteners = (uint32_t)count;
    return 0;
}

/* F_NAMELIST: "[a, b]" or a block sequence of non-empty names. */
static int load_namelist(struct loader *ld, const struct field *f, const yaml_node_t *k,
                         const yaml_node_t *v, void *base, const char *path)
{
    uint32_t count = 0;
    if (!cf_is_null(v)) {
        if (v->type != YAML_SEQUENCE_NODE)
            return cf_fail(ld, k, path, "expected a sequence of names, got %s", cf_node_kind(v));
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            yaml_node_t *item = yaml_document_get_node(ld->doc, *it);
            if (item == NULL || item->type != YAML_SCALAR_NODE || cf_is_null(item))
                return cf_fail(ld, item ? item : v, path, "expected a name");
            if (count >= f->max)
                return cf_fail(ld, item, path, "too many names (max %llu)",
                               (unsigned long long)f->max);
            if (item->data.scalar.length >= f->size)
                return cf_fail(ld, item, path, "name too long (max %zu characters)", f->size - 1);
            char *dst = (char *)base + f->off + count * f->size;
            for (uint32_t j = 0; j < count; j++)
                if (strcmp((char *)base + f->off + j * f->size, cf_sval(item)) == 0)
                    return cf_fail(ld, item, path, "\"%.40s\" is listed twice", cf_sval(item));
            memcpy(dst, cf_sval(item), item->data.scalar.length + 1);
            count++;
        }
    }
    memcpy((char *)base + f->off2, &count, sizeof(count));
    return 0;
}

/* F_FLAGS: "[a, b]" of names from f->names, or "all"; bit i for names[i]. */
static int load_flags(struct loader *ld, const struct field *f, const yaml_node_t *k,
                      const yaml_node_t *v, void *base, const char *path)
{
    uint32_t flags = 0;
    if (!cf_is_null(v)) {
        if (v->type != YAML_SEQUENCE_NODE)
            return cf_fail(ld, k, path, "expected a sequence of names, got %s", cf_node_kind(v));
        for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
             it++) {
            yaml_node_t *item = yaml_document_get_node(ld->doc, *it);
            if (item == NULL || item->type != YAML_SCALAR_NODE || cf_is_null(item))
                return cf_fail(ld, item ? item : v, path, "expected a name");
            uint32_t i = 0, all = strcmp(cf_sval(item), "all") == 0;
            while (f->names[i] && strcmp(f->names[i], cf_sval(item)) != 0)
                i++;
            if (all) {
                flags |= (uint32_t)((1ull << i) - 1); /* i: the count here */
                continue;
            }
            if (f->names[i] == NULL)
                return cf_fail(ld, item, path, "unknown name \"%.40s\" (all, %s, ...)",
                               cf_sval(item), f->names[0]);
            flags |= 1u << i;
        }
    }
    memcpy((char *)base + f->off, &flags, sizeof(flags));
    return 0;
}

int cf_load_field(struct loader *ld, const struct field *f, const yaml_node_t *k,
                  const yaml_node_t *v, void *base, const char *path)
{
    switch (f->type) {
    case F_UINT:
        return load_uint(ld, f, k, v, base, path);
    case F_BOOL:
        return load_bool(ld, f, k, v, base, path);
    case F_STR:
    case F_NAME:
    case F_ADDR:
        return load_str(ld, f, k, v, base, path);
    case F_LEVEL:
        return load_level(ld, f, k, v, base, path);
    case F_ENUM:
        return load_enum(ld, f, k, v, base, path);
    case F_SECTION:
        if (cf_is_null(v)) /* "mqtt:" with every key commented out */
            return 0;
        return load_map(ld, k, v, f->sub, f->nsub, base, path, NULL);
    case F_LISTENERS:
        return load_listeners(ld, k, v, path);
    case F_NAMELIST:
        return load_namelist(ld, f, k, v, base, path);
    case F_FLAGS:
        return load_flags(ld, f, k, v, base, path);
    }
    return cf_fail(ld, k, path, "internal error: bad field type");
}

/* Walk mapping `node` against `tab` (at most 32 entries).  `at` is where a
 * "not a mapping" error points.  Sets *seen_out to the bitmask of the keys
 * found. */
static int load_map(struct loader *ld, const yaml_node_t *at, const yaml_node_t *node,
                    const struct field *tab, size_t n, void *base, const char *prefix,
                    uint32_t *seen_out)
{
    uint32_t seen = 0;

    if (node->type != YAML_MAPPING_NODE)
        return cf_fail(ld, at, prefix, "expected a mapping, got %s", cf_node_kind(node));
    for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
         pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
        yaml_node_t *v = yaml_document_get_node(ld->doc, pair->value);
        char path[KEYPATH_LEN];
        if (k == NULL || v == NULL)
            return cf_fail(ld, node, prefix, "internal error: missing node");
        if (k->type != YAML_SCALAR_NODE)
            return cf_fail(ld, k, prefix, "a key must be a scalar, got %s", cf_node_kind(k));
        cf_key_join(path, prefix, prefix[0] ? "." : "");
        cf_key_join(path, path, cf_sval(k));

        size_t i = 0;
        while (i < n && strcmp(tab[i].key, cf_sval(k)) != 0)
            i++;
        if (i == n && tab == root_fields) { /* a module's section? */
            int rc = cf_load_section(ld, k, v, path);
            if (rc < 0)
                return -1;
            if (rc == 0)
                continue;
        }
        if (i == n) {
            an_near_t nr = AN_NEAR(cf_sval(k));
            for (size_t q = 0; q < n; q++)
                an_near_try(&nr, tab[q].key);
            if (tab == root_fields)
                for (uint32_t q = 0; q < ld->c->nsections; q++)
                    an_near_try(&nr, ld->c->sections[q].name);
            return cf_unknown_key(ld, k, path, &nr);
        }
        if (seen & (1u << i))
            return cf_fail(ld, k, path, "duplicate key");
        seen |= 1u << i;
        if (cf_load_field(ld, &tab[i], k, v, base, path) < 0)
            return -1;
    }
    if (seen_out)
        *seen_out = seen;
    return 0;
}


/* ---- entry point ---- */

/* persistence.redis: a url that parses and a prefix, pointing at the key's
 * own line (the section's, or the file's, when the key is absent). */
static const yaml_node_t *cf_sub_node(struct loader *ld, const yaml_node_t *map, const char *key)
{
    const yaml_node_t *k = map->type == YAML_MAPPING_NODE ? cf_key_node(ld, map, key) : map;
    if (k == map)
        return NULL;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++)
        if (yaml_document_get_node(ld->doc, pr->key) == k)
            return yaml_document_get_node(ld->doc, pr->value);
    return NULL;
}

static int persistence_redis_check(struct loader *ld, const yaml_node_t *root, const conf_t *c)
{
    const yaml_node_t *pers = cf_sub_node(ld, root, "persistence");
    const yaml_node_t *red = pers ? cf_sub_node(ld, pers, "redis") : NULL;
    const yaml_node_t *at = red ? red : pers ? pers : root;
    redis_url_t u;
    char why[256];

    if (redis_url_parse(c->persistence_redis.url, &u, why, sizeof(why)) < 0)
        return cf_fail(ld, red ? cf_key_node(ld, red, "url") : at, "persistence.redis.url", "%s",
                       why);
    if (c->persistence_redis.prefix[0] == '\0')
        return cf_fail(ld, red ? cf_key_node(ld, red, "prefix") : at, "persistence.redis.prefix",
                       "must not be empty (it keeps the stores sharing one Redis apart)");
    if (c->session_store == CONF_SESSIONS_REPLICATED &&
        (!c->persistence_enabled || c->persistence_backend != CONF_STORE_ROCKSDB))
        return cf_fail(ld, pers ? cf_key_node(ld, pers, "session_store") : root,
                       "persistence.session_store",
                       "replicated needs persistence.enabled: true and persistence.backend: "
                       "rocksdb (the replica is kept in another node's RocksDB; with redis, the "
                       "sessions are in Redis already)");
    return 0;
}

int conf_load(conf_t *c, const char *path, char *err, size_t errlen)
{
    int rc = -1;
    FILE *f = NULL;
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    int have_parser = 0, have_doc = 0, have_extra = 0;
    conf_t tmp = *c;
    struct loader ld = {.path = path, .doc = &doc, .c = &tmp, .err = err, .errlen = errlen};
    struct stat st;

    if (err && errlen)
        err[0] = '\0';
    f = fopen(path, "rb");
    if (f == NULL) {
        put_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        put_err(err, errlen, "%s: cannot open: %s", path, strerror(EISDIR));
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        put_err(err, errlen, "%s: yaml: out of memory", path);
        goto out;
    }
    have_parser = 1;
    yaml_parser_set_input_file(&parser, f);

    /* On failure yaml_parser_load() frees the document itself. */
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_fail(&ld, &parser, f);
        goto out;
    }
    have_doc = 1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) /* empty file, or only comments */
        goto ok;

    if (!yaml_parser_load(&parser, &extra)) {
        yaml_fail(&ld, &parser, f);
        goto out;
    }
    have_extra = 1;
    yaml_node_t *root2 = yaml_document_get_root_node(&extra);
    if (root2 != NULL) {
        put_err(err, errlen, "%s:%zu: yaml: only one document is allowed", path,
                (size_t)root2->start_mark.line + 1);
        goto out;
    }

    if (cf_is_null(root)) /* "---" alone */
        goto ok;
    uint8_t anon_before = tmp.allow_anonymous;
    tmp.allow_anonymous = CONF_ANON_INHERIT; /* "not set by the file" */
    uint32_t ban_before = tmp.auth.ban.max_failures;
    uint8_t ban_lo_before = tmp.auth.ban.loopback;
    tmp.auth.ban.max_failures = UINT32_MAX; /* not set: above the key's range */
    tmp.auth.ban.loopback = 2;
    if (load_map(&ld, root, root, root_fields, NELEM(root_fields), &tmp, "", NULL) < 0)
        goto out;
    if (tmp.auth.password_cache == CONF_PWCACHE_PERSISTENT && !tmp.persistence_enabled) {
        const yaml_node_t *at = root; /* the key's line: auth's map, then its key */
        for (yaml_node_pair_t *pr = root->data.mapping.pairs.start;
             root->type == YAML_MAPPING_NODE && pr < root->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(&doc, pr->key);
            yaml_node_t *v = yaml_document_get_node(&doc, pr->value);
            if (k && v && k->type == YAML_SCALAR_NODE && strcmp(cf_sval(k), "auth") == 0 &&
                v->type == YAML_MAPPING_NODE)
                at = cf_key_node(&ld, v, "password_cache");
        }
        cf_fail(&ld, at, "auth.password_cache",
                "persistent needs persistence.enabled: true (the entries live in the store)");
        goto out;
    }
    if (persistence_redis_check(&ld, root, &tmp) < 0)
        goto out;
    if (tmp.workers_consolidate_below >= tmp.workers_consolidate_above) {
        const yaml_node_t *at = cf_key_node(&ld, root, "workers_consolidate_below");
        cf_fail(&ld, at ? at : root, "workers_consolidate_below",
                "must be less than workers_consolidate_above (%u), or the workers would "
                "consolidate and spread again at every look",
                tmp.workers_consolidate_above);
        goto out;
    }
    if (tmp.auth.ban.loopback == 2) /* a ban set by hand applies everywhere */
        tmp.auth.ban.loopback = tmp.auth.ban.max_failures != UINT32_MAX ? 1 : ban_lo_before;
    if (tmp.auth.ban.max_failures == UINT32_MAX)
        tmp.auth.ban.max_failures = ban_before;
    if (tmp.allow_anonymous == CONF_ANON_INHERIT) {
        /* not set: anonymous stays allowed only while every listener is
         * local-only (loopback) */
        tmp.allow_anonymous = anon_before;
        for (uint32_t i = 0; i < tmp.nlisteners; i++) {
            const char *a = tmp.listeners[i].address;
            if (strncmp(a, "127.", 4) != 0 && strcmp(a, "::1") != 0)
                tmp.allow_anonymous = 0;
        }
    }
ok:
    *c = tmp;
    rc = 0;
out:
    if (have_extra)
        yaml_document_delete(&extra);
    if (have_doc)
        yaml_document_delete(&doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    if (f)
        fclose(f);
    return rc;
}

int conf_listener_loopback(const conf_listener_t *l)
{
    return strncmp(l->address, "127.", 4) == 0 || strcmp(l->address, "::1") == 0;
}

/* ---- display (conf_walk) -------------------------------------------------- */

static uint64_t read_uint(const void *p, size_t size)
{
    switch (size) {
    case 1:
        return *(const uint8_t *)p;
    case 2:
        return *(const uint16_t *)p;
    case 4:
        return *(const uint32_t *)p;
    default:
        return *(const uint64_t *)p;
    }
}

static void walk_fields(const conf_t *c, const struct field *fs, size_t n, const void *base,
                        conf_visit_fn fn, void *ud)
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < n; i++) {
        const struct field *f = &fs[i];
        const char *p = (const char *)base + f->off;
        switch (f->type) {
        case F_UINT:
            fn(ud, CONF_V_UINT, f->key, NULL, read_uint(p, f->size));
            break;
        case F_BOOL: {
            uint8_t b = *(const uint8_t *)p;
            /* a listener's allow_anonymous left unset shows what applies:
             * mqtt.allow_anonymous (as proto.c decides) */
            if (b == CONF_ANON_INHERIT && fs == listener_fields)
                b = c->allow_anonymous;
            fn(ud, CONF_V_BOOL, f->key, NULL, b);
            break;
        }
        case F_STR:
        case F_NAME:
        case F_ADDR:
            fn(ud, CONF_V_STR, f->key, p, 0);
            break;
        case F_LEVEL: {
            int lv = *(const int *)p;
            fn(ud, CONF_V_STR, f->key, lv >= 0 && lv < 4 ? levels[lv] : "?", 0);
            break;
        }
        case F_ENUM:
            fn(ud, CONF_V_STR, f->key, f->names[*(const uint8_t *)p], 0);
            break;
        case F_SECTION:
            fn(ud, CONF_V_SECTION, f->key, NULL, 0);
            walk_fields(c, f->sub, f->nsub, base, fn, ud);
            fn(ud, CONF_V_END, f->key, NULL, 0);
            break;
        case F_NAMELIST: {
            uint32_t count;
            memcpy(&count, (const char *)base + f->off2, sizeof(count));
            fn(ud, CONF_V_LIST, f->key, NULL, 0);
            for (uint32_t j = 0; j < count; j++)
                fn(ud, CONF_V_STR, NULL, p + (size_t)j * f->size, 0);
            fn(ud, CONF_V_END, f->key, NULL, 0);
            break;
        }
        case F_FLAGS: {
            uint32_t flags;
            memcpy(&flags, p, sizeof(flags));
            fn(ud, CONF_V_LIST, f->key, NULL, 0);
            for (uint32_t j = 0; f->names[j]; j++)
                if (flags & (1u << j))
                    fn(ud, CONF_V_STR, NULL, f->names[j], 0);
            fn(ud, CONF_V_END, f->key, NULL, 0);
            break;
        }
        case F_LISTENERS:
            fn(ud, CONF_V_LIST, f->key, NULL, 0);
            for (uint32_t l = 0; l < c->nlisteners; l++) {
                fn(ud, CONF_V_ITEM, NULL, NULL, 0);
                walk_fields(c, listener_fields, NELEM(listener_fields), &c->listeners[l], fn, ud);
                fn(ud, CONF_V_END, NULL, NULL, 0);
            }
            fn(ud, CONF_V_END, f->key, NULL, 0);
            break;
        }
    }
}

void conf_walk(const conf_t *c, conf_visit_fn fn, void *ud)
{
    walk_fields(c, root_fields, NELEM(root_fields), c, fn, ud);
    for (uint32_t i = 0; i < c->nsections; i++) {
        const conf_section_t *sec = &c->sections[i];
        if (sec->walk == NULL)
            continue;
        fn(ud, CONF_V_SECTION, sec->name, NULL, 0);
        sec->walk(c->section_data + sec->off, fn, ud);
        fn(ud, CONF_V_END, sec->name, NULL, 0);
    }
}
