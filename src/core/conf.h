/* conf.h -- the broker's configuration: embedded defaults and the YAML file.
 *
 * conf_defaults() fills the embedded defaults (MQTT on 127.0.0.1:1883,
 * anonymous allowed).  conf_load() reads a YAML file (libyaml) over them.
 * Every key is known: an unknown key, a wrong type or an out-of-range value
 * is an error that names the file, the line and the key, and the broker
 * refuses to start.  config.example.yaml documents every key.  A module
 * (src/broker/module.h) owns a top-level section of its own: it declares
 * it with conf_section_add() and reads its keys with the conf_sec_*
 * readers, which check and report exactly as the tables of conf.c do.
 *
 * Read once at start-up by the main thread, then read-only: workers read it
 * without locks.
 */
#ifndef ANTENNA_CONF_H
#define ANTENNA_CONF_H

#include <stddef.h>
#include <stdint.h>

#define CONF_MAX_LISTENERS 16
#define CONF_WS_MAX_ORIGINS 8 /* entries of a listener's ws_allowed_origins */

enum { CONF_QUEUE_FULL_DROP = 0, CONF_QUEUE_FULL_REFUSE = 1 };

typedef struct {
    char name[32];    /* "mqtt" by default */
    char address[64]; /* IPv4 or IPv6 literal, or "0.0.0.0" / "::" */
    uint16_t port;
    uint32_t max_connections; /* 0 = unlimited */
    uint8_t transport;        /* CONF_TRANSPORT_* */
    uint8_t proxy_protocol;   /* CONF_PROXY_*: a PROXY header expected first */
    /* TLS (transport: tls) */
    uint8_t require_client_cert; /* SSL_VERIFY_PEER|FAIL_IF_NO_PEER_CERT with ca_file */
    uint8_t tls_min_version;     /* CONF_TLS_1_2 or CONF_TLS_1_3 */
    uint32_t handshake_timeout;  /* seconds for the TLS handshake (and PROXY header) */
    char cert_file[256];         /* PEM server certificate (chain) */
    char key_file[256];          /* PEM private key */
    char ca_file[256];           /* PEM CAs that client certificates must chain to; "" = none */
    char ciphers[512];           /* TLS 1.2 cipher list (OpenSSL syntax) */
    uint8_t cert_username;       /* CONF_CERT_USER_*: username from the client certificate */
    /* WebSocket (transport: ws, wss) */
    char ws_path[128];     /* request path of the upgrade, "/mqtt" */
    uint32_t ws_max_frame; /* largest WebSocket message accepted, bytes */
    /* Origin headers allowed to upgrade ("https://host[:port]"); none = any */
    char ws_allowed_origins[CONF_WS_MAX_ORIGINS][128];
    uint32_t nws_allowed_origins;
    uint8_t allow_anonymous; /* CONF_ANON_*: clients without credentials here */
} conf_listener_t;

enum { CONF_TRANSPORT_TCP = 0, CONF_TRANSPORT_TLS, CONF_TRANSPORT_WS, CONF_TRANSPORT_WSS };
enum { CONF_PROXY_OFF = 0, CONF_PROXY_V1, CONF_PROXY_V2 };
enum { CONF_TLS_1_2 = 0, CONF_TLS_1_3 };
enum { CONF_CERT_USER_NONE = 0, CONF_CERT_USER_CN, CONF_CERT_USER_SAN };
/* The default TLS 1.2 cipher list: forward secrecy and AEAD only. */
#define CONF_DEFAULT_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20"


#define CONF_AUTH_HTTP_MAX_URLS 4
/* auth.http: the webhook backend (src/auth/auth_http.c). */
typedef struct {
    char url[512];                           /* POST target, http:// or https:// */
    char urls[CONF_AUTH_HTTP_MAX_URLS][512]; /* or several: round robin, failover */
    uint32_t nurls;
    char ca_file[256];   /* PEM CAs for an https webhook; "" = the system's */
    uint8_t format;      /* CONF_AUTH_FORMAT_* */
    uint8_t on_error;    /* CONF_AUTH_ON_ERROR_*: verdict when the webhook fails */
    uint32_t timeout_ms; /* whole request, queueing included */
    uint32_t connect_timeout_ms;
    uint32_t cache_ttl_ms; /* 0 = no cache */
    uint32_t cache_size;   /* entries */
    uint32_t pool_size;    /* connections kept to the webhook */
    uint32_t queue_size;   /* requests waiting or in flight; beyond: on_error */
} conf_auth_http_t;

/* auth.redis: credentials and ACL rules in Redis (src/auth/auth_redis.c). */
typedef struct {
    char host[256];
    uint16_t port;
    char password[256]; /* "" = no AUTH */
    uint32_t db;
    char prefix[64];     /* keys: PREFIXuser:NAME, PREFIXacl:NAME */
    uint32_t pool_size;  /* connections, one I/O thread each */
    uint32_t timeout_ms; /* connect and each command */
    uint32_t queue_size;
    uint8_t on_error; /* CONF_AUTH_ON_ERROR_* */
} conf_auth_redis_t;

#define CONF_JWT_MAX_CLAIMS 8
/* auth.jwt: tokens in the password (or username) field (src/auth/auth_jwt.c). */
typedef struct {
    uint8_t alg;               /* CONF_JWT_* */
    uint8_t field;             /* CONF_JWT_FROM_*: which CONNECT field carries it */
    char secret[256];          /* HS256 */
    char public_key_file[256]; /* RS256/ES256: PEM public key */
    char jwks_file[256];       /* RS256/ES256: a JWKS file (first matching key, or by kid) */
    char username_claim[64];   /* claim naming the user, "sub" */
    char acl_claim[64];        /* claim carrying {"pub": [...], "sub": [...]}, "" = none */
    uint32_t leeway_s;         /* clock skew allowed on exp/nbf */
    uint8_t require_exp;       /* a token without exp is refused */
    char audience[256];        /* "" = aud not checked; else aud must name it */
    char issuer[256];          /* "" = iss not checked; else iss must equal it */
    char required_claims[CONF_JWT_MAX_CLAIMS][64]; /* claims a token must carry */
    uint32_t nrequired_claims;
} conf_auth_jwt_t;

/* auth.ban: brute-force protection per source address. */
typedef struct {
    uint32_t max_failures; /* failures within window_s before a ban; 0 = off */
    uint32_t window_s;
    uint32_t ban_s;
    uint32_t delay_ms;   /* refusals of a banned address wait this long */
    uint32_t table_size; /* addresses and user names tracked (oldest evicted) */
    uint8_t loopback;    /* bans on loopback listeners too; unset in the file:
                                * yes when the file sets max_failures, else no */
} conf_auth_ban_t;

#define CONF_AUTH_MAX_CHAIN 8
/* auth: the chain of backends (src/auth/auth_chain.c) and the ACL. */
typedef struct {
    char chain[CONF_AUTH_MAX_CHAIN][32]; /* backend names, in order */
    uint32_t nchain;
    uint8_t default_policy; /* CONF_POLICY_*: when every backend passes */
    uint8_t acl_default;    /* CONF_POLICY_*: when no ACL rule matches */
    char acl_file[256];
    char password_file[256];
    uint32_t acl_cache_size;       /* decisions cached per connection */
    uint32_t password_threads;     /* threads running PBKDF2 for the password file */
    uint32_t password_queue;       /* password checks waiting for them; beyond: 0x97 */
    uint32_t password_cache_ttl_s; /* successful checks remembered; 0 = no cache */
    uint32_t password_cache_size;  /* entries */
    uint8_t password_cache;        /* CONF_PWCACHE_*: successful checks kept in the store too */
    uint32_t password_cache_persistent_ttl_s; /* persistent: an entry's life after its check */
    uint8_t client_id_binding;                /* CONF_CID_BIND_*: client ids bound to users */
    conf_auth_jwt_t jwt;
    conf_auth_ban_t ban;
} conf_auth_t;

enum { CONF_PWCACHE_MEMORY = 0, CONF_PWCACHE_PERSISTENT };
/* CONF_POLICY_AUTO: allow when nothing is configured to decide (an empty
 * chain, no ACL file), else deny. */
enum { CONF_POLICY_DENY = 0, CONF_POLICY_ALLOW, CONF_POLICY_AUTO };
/* auth.default auto with an empty chain allows on loopback listeners only: a
 * listener bound elsewhere refuses clients that send credentials. */
/* auth.client_id_binding: NONE any client id; USERNAME the user name
 * itself; PREFIX the user name, alone or followed by a separator
 * (CONF_CID_BIND_SEPARATORS) and anything. */
enum { CONF_CID_BIND_NONE = 0, CONF_CID_BIND_USERNAME, CONF_CID_BIND_PREFIX };
#define CONF_CID_BIND_SEPARATORS "-_:.@/"
/* listener allow_anonymous: INHERIT takes mqtt.allow_anonymous. */
enum { CONF_ANON_NO = 0, CONF_ANON_YES, CONF_ANON_INHERIT };
enum { CONF_JWT_HS256 = 0, CONF_JWT_RS256, CONF_JWT_ES256 };
enum { CONF_JWT_FROM_PASSWORD = 0, CONF_JWT_FROM_USERNAME };

/* A top-level section read by a module (src/broker/module.h) instead of
 * the tables of conf.c: conf_load() hands its mapping to `load`, which
 * reads each key with the conf_sec_* readers below; a key it did not read
 * is an unknown key.  The values live in conf_t.section_data, at `off`. */
#define CONF_MAX_SECTIONS 16
#define CONF_SECTION_BYTES 65536      /* for every section's values together */
typedef struct conf_sec_s conf_sec_t; /* one section being loaded */
typedef void (*conf_visit_fn)(void *ud, int kind, const char *key, const char *s, uint64_t u);
typedef struct {
    const char *name;                         /* the top-level key */
    int (*load)(conf_sec_t *s, void *values); /* 0, or -1 from a conf_sec_* call */
    void (*walk)(const void *values, conf_visit_fn fn, void *ud); /* display; NULL: none */
    uint32_t off, size; /* values in conf_t.section_data */
} conf_section_t;

enum { CONF_AUTH_FORMAT_JSON = 0, CONF_AUTH_FORMAT_OPA };
enum { CONF_STORE_ROCKSDB = 0, CONF_STORE_REDIS };
/* persistence.session_store: where a node's sessions also live */
enum { CONF_SESSIONS_LOCAL = 0, CONF_SESSIONS_REPLICATED };
enum { CONF_AUTH_ON_ERROR_DENY = 0, CONF_AUTH_ON_ERROR_PASS };

typedef struct {
    uint32_t workers;                   /* 0 = one per core */
    uint32_t workers_coalesce_us;       /* wake-up coalescing window (worker.c), 0 = off */
    uint8_t workers_migrate;            /* a connection moves to the worker its traffic
                                   * goes to (migrate.h); default on */
    uint8_t workers_consolidate;        /* light load: every session on worker 0 (migrate.h) */
    uint32_t workers_consolidate_below; /* % of one core, all workers: consolidate */
    uint32_t workers_consolidate_above; /* % of one core on worker 0: spread again */
    /* log */
    int log_level;      /* AN_LOG_ERROR..AN_LOG_DEBUG, see log.h */
    char log_file[256]; /* "" = stderr */
    uint8_t log_format; /* CONF_LOG_TEXT or CONF_LOG_JSON */
    uint8_t log_target; /* CONF_LOG_TO_*; stderr with a file set means the file */
    /* api: the management HTTP API (src/api) */
    uint8_t api_enabled;
    uint8_t api_optional; /* no YAML key: set by main for the embedded
                                * defaults; a taken port is a warning and the
                                * broker runs without the API */
    char api_bind[64];
    uint16_t api_port;
    char api_tls_cert[256]; /* PEM files: HTTPS when both are set */
    char api_tls_key[256];
    char api_keys_file[256];             /* NAME:sha256hex lines */
    char api_users_file[256];            /* NAME:$7$... lines (basic auth) */
    uint8_t api_open_health;             /* the /health endpoints without credentials */
    uint8_t api_open_metrics;            /* /metrics without credentials */
    uint32_t api_timeout_ms;             /* wait for the workers' answers */
    uint32_t api_max_connections;        /* HTTP connections at once (default 256) */
    uint32_t api_max_connections_per_ip; /* per peer address; 0 = no limit (default 16) */
    uint32_t api_request_timeout_s;      /* a whole request (headers, body) must arrive in it */
    uint32_t
        api_min_password_iterations; /* users_file lines with fewer PBKDF2 iterations refused */
    /* listeners */
    conf_listener_t listeners[CONF_MAX_LISTENERS];
    uint32_t nlisteners;
    /* mqtt */
    uint32_t max_packet_size;      /* bytes, default 1 MiB, max 268435455 */
    uint32_t max_client_id_length; /* bytes, default 256; longer: CONNACK 0x85 / 2 */
    uint32_t connect_timeout;      /* seconds a connection may take to CONNECT */
    uint16_t max_keepalive;        /* seconds; a longer requested keepalive is capped... */
    uint16_t max_inflight;         /* QoS 1/2 messages in flight per session */
    uint32_t max_queued;           /* messages queued per session behind the window */
    uint32_t retry_interval; /* seconds before an unacknowledged QoS>0 message is resent with DUP */
    uint32_t session_expiry; /* seconds an offline persistent session is kept; 0 = forever */
    uint8_t allow_anonymous; /* clients without username; unset in the file:
                                * yes when every listener is loopback, else no */
    uint32_t sys_interval;   /* seconds between $SYS updates; 0 = off */
    /* mqtt: what CONNACK advertises (MQTT 5) and enforces */
    uint8_t max_qos; /* 0..2 */
    uint8_t retain_available;
    uint8_t wildcard_subscriptions;
    uint8_t shared_subscriptions;
    uint8_t subscription_identifiers;
    uint8_t shared_strategy;    /* CONF_SHARED_* */
    uint8_t keepalive_over_max; /* CONF_KEEPALIVE_*: MQTT 3.1.1 clients */
    uint16_t topic_alias_max;   /* aliases a client may use towards us */
    uint16_t receive_maximum;   /* unacknowledged QoS 1/2 a client may send */
    char server_reference[256]; /* "" = none; else CONNACK 0x9D + reference */
    uint8_t allow_sys_publish;  /* clients may publish to $SYS and $SYS/... */
    /* limits: 0 = unlimited unless said otherwise */
    uint32_t max_connections;        /* whole broker; 0 in the file = derived from
                                       * RLIMIT_NOFILE at start (server_init) */
    uint32_t max_connection_rate;    /* new connections per second */
    uint32_t max_message_rate;       /* PUBLISH per second per client (reads throttled) */
    uint32_t max_byte_rate;          /* bytes per second per client (reads throttled) */
    uint32_t max_subscriptions;      /* per client, default 1000 */
    uint32_t max_retained;           /* retained topics, default 1,000,000 */
    uint32_t max_sessions;           /* persistent sessions, default 1,000,000 */
    uint16_t max_awaiting_rel;       /* MQTT 3.1.1: incoming QoS 2 awaiting PUBREL */
    uint16_t max_topic_levels;       /* default 128 */
    uint16_t max_topic_length;       /* bytes, default 4096 */
    uint64_t max_queued_bytes;       /* per session, default 64 MiB */
    uint8_t queue_full_policy;       /* CONF_QUEUE_FULL_*: QoS 1/2 to a full queue */
    uint32_t publisher_backpressure; /* messages queued for one connected subscriber
                                  * beyond which its publishers are paused; 0 = off */
    uint32_t
        slow_subscriber_timeout; /* seconds a subscriber may keep its output full; 0 = forever */
    uint32_t max_output_buffer;  /* bytes pending to one client beyond which QoS 0
                                       * messages to it are dropped */
    /* persistence (RocksDB under data_dir); today: retained messages */
    uint8_t persistence_enabled;
    uint8_t persistence_sync; /* 0 always, 1 interval, 2 none (store_sync_t) */
    uint32_t sync_interval_ms;
    char data_dir[256];
    uint8_t persistence_backend; /* CONF_STORE_ROCKSDB (under data_dir), CONF_STORE_REDIS */
    uint8_t session_store;       /* CONF_SESSIONS_*: replicated copies the store to a
                                  * replica node (src/cluster/cl_repl.c) */
    struct {
        char url[512];    /* redis_url.h: redis://[user:pass@]host[:port][/db], unix:/path */
        char prefix[256]; /* of the store's Redis keys; "{node}": cluster.node or "default" */
        uint32_t connect_timeout_ms, timeout_ms;
        uint32_t min_replicas; /* WAIT for this many replicas after each write */
    } persistence_redis;
    uint8_t persistence_recover; /* antenna --recover (command line only): salvage a
                                       * damaged store instead of refusing to start */
    uint64_t memory_high_water;  /* bytes of messages and buffers; above it new
                                       * connections are refused, QoS 0 to slow clients dropped;
                                       * 0 in the file = derived from RAM at start */
    conf_auth_t auth;
    /* auth backends that ask another server */
    conf_auth_http_t auth_http;
    conf_auth_redis_t auth_redis;
    /* events (src/broker/event.h) */
    uint32_t events_log; /* events.log: kinds written as JSON lines to the
                                       * log (bit = event_kind_t), default none */
    /* sections read by modules (conf_section_add, below): their
     * descriptors and their values, inside conf_t so that a copy of the
     * configuration carries them */
    conf_section_t sections[CONF_MAX_SECTIONS];
    uint32_t nsections;
    uint32_t section_used; /* bytes of section_data handed out */
    _Alignas(16) unsigned char section_data[CONF_SECTION_BYTES];
} conf_t;

/* The event names of events.log, in event_kind_t order, NULL terminated. */
extern const char *const conf_event_names[];

enum { CONF_LOG_TEXT = 0, CONF_LOG_JSON };
enum { CONF_LOG_TO_STDERR = 0, CONF_LOG_TO_FILE, CONF_LOG_TO_SYSLOG };

/* Walk the configuration for display (the API's GET /api/v1/config): fn is
 * called for each section start (kind CONF_V_SECTION, key; kind
 * CONF_V_ITEM for an item of the listener list, key NULL), each value and
 * each section end (CONF_V_END).  Values come as text (s) or numbers (u)
 * or booleans (u 0/1); secrets are never passed (none today: files are
 * shown by path). */
enum { CONF_V_SECTION, CONF_V_LIST, CONF_V_ITEM, CONF_V_END, CONF_V_STR, CONF_V_UINT, CONF_V_BOOL };
void conf_walk(const conf_t *c, conf_visit_fn fn, void *ud);

enum {
    CONF_SHARED_ROUND_ROBIN = 0,
    CONF_SHARED_RANDOM,
    CONF_SHARED_HASH_CLIENTID,
    CONF_SHARED_HASH_TOPIC,
    CONF_SHARED_STICKY
};
enum { CONF_KEEPALIVE_REFUSE = 0, CONF_KEEPALIVE_CAP };

void conf_defaults(conf_t *c);

/* Load `path` over the current values (keys absent from the file keep
 * them; a `listeners` list replaces the whole list).  Returns 0, or -1 with
 * err set to "PATH:LINE: KEY: problem" (LINE is 1-based, KEY the dotted
 * path such as "mqtt.max_inflight" or "listeners[1].port"), or
 * "PATH: cannot open: REASON"; on error *c is left unchanged. */
int conf_load(conf_t *c, const char *path, char *err, size_t errlen);

/* 1 when the listener is bound to a loopback address (127.0.0.0/8, ::1):
 * only local clients reach it. */
int conf_listener_loopback(const conf_listener_t *l);

/* ---- module sections ---- */

/* Declare section `name` (after conf_defaults, before conf_load): `size`
 * zeroed bytes for its values, returned for the module to fill with its
 * defaults.  NULL when the name is taken or the table or the space is
 * full (a programming error: the caller aborts). */
void *conf_section_add(conf_t *c, const char *name, int (*load)(conf_sec_t *s, void *values),
                       void (*walk)(const void *values, conf_visit_fn fn, void *ud), size_t size);
/* The values of section `name`, or NULL when it was not declared. */
const void *conf_section_values(const conf_t *c, const char *name);

/* Readers for a section's `load`.  A key absent from the file leaves *out
 * as it is (the default) and returns 0; a present key is checked as the
 * core keys are (same rules, same "PATH:LINE: section.key: problem"
 * errors) and returns 0, or -1 with the error set: return it at once. */
int conf_sec_u32(conf_sec_t *s, const char *key, uint32_t min, uint32_t max, uint32_t *out);
int conf_sec_u64(conf_sec_t *s, const char *key, uint64_t min, uint64_t max, uint64_t *out);
int conf_sec_bool(conf_sec_t *s, const char *key, uint8_t *out);
/* A duration in ms: a number (ms) or with a unit ("1500ms", "10s", "2m"). */
int conf_sec_ms(conf_sec_t *s, const char *key, uint32_t min, uint32_t max, uint32_t *out);
/* A string into out[size]; CONF_SEC_NONEMPTY refuses an empty one. */
enum { CONF_SEC_NONEMPTY = 1 };
int conf_sec_str(conf_sec_t *s, const char *key, char *out, size_t size, int flags);
/* One of the NULL-terminated names; its index into *out. */
int conf_sec_enum(conf_sec_t *s, const char *key, const char *const *names, uint8_t *out);
/* A sequence of names ("[a, b]" or a block list of non-empty scalars, no
 * duplicates): at most max, each shorter than `each` bytes, into
 * out[i * each]; *count is set.  Absent: out and *count are left as they
 * are. */
int conf_sec_names(conf_sec_t *s, const char *key, char *out, size_t each, uint32_t max,
                   uint32_t *count);
/* A list of mappings under `key` (absent: nothing): fn(item, i, ud) reads
 * item i's keys with these readers (errors "section.key[i].k"); a key it
 * did not read is refused.  0, or -1 (fn's, or not a list of mappings). */
int conf_sec_each(conf_sec_t *s, const char *key, int (*fn)(conf_sec_t *item, uint32_t i, void *ud),
                  void *ud);
/* A nested mapping under `key` (absent: nothing): fn(sub, ud) reads its
 * keys with these readers (errors "section.key.k"); a key it did not read
 * is refused.  0, or -1 (fn's, or not a mapping). */
int conf_sec_map(conf_sec_t *s, const char *key, int (*fn)(conf_sec_t *sub, void *ud), void *ud);
/* A mapping of names to strings under `key` (absent: nothing), e.g.
 * headers or pass-through properties: fn(sub, name, value, ud) for each
 * pair in file order; fn may refuse one with conf_sec_fail(sub, name, ...)
 * ("section.key.name").  0, or -1. */
int conf_sec_pairs(conf_sec_t *s, const char *key,
                   int (*fn)(conf_sec_t *sub, const char *name, const char *value, void *ud),
                   void *ud);
/* Every scalar key of s not read so far, in file order: fn(s, key, value,
 * quoted, ud) (quoted: the value was written in quotes, so "1" is text);
 * they count as read.  For free-form keys (a sink action's driver keys);
 * call it last.  0, or fn's -1. */
int conf_sec_rest(conf_sec_t *s,
                  int (*fn)(conf_sec_t *s, const char *key, const char *value, int quoted,
                            void *ud),
                  void *ud);
/* 1 when the file sets `key` in this section. */
int conf_sec_has(const conf_sec_t *s, const char *key);
/* A rule across keys: "PATH:LINE: section.key: problem", LINE of the key
 * (of the section when the key is absent); always returns -1. */
int conf_sec_fail(conf_sec_t *s, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A section's plain keys as one table, read by conf_sec_keys (the readers
 * above, in table order) and shown by conf_keys_walk (GET /api/v1/config):
 * a key is named once, so what is loaded and what is shown cannot differ.
 * Checks across keys stay in the module's load function, after the table.
 * The CONF_K_* macros take the values' struct type T and the member; a
 * member of the wrong type is a compile error (distinct pointer types). */
enum { CONF_K_BOOL, CONF_K_U32, CONF_K_U64, CONF_K_MS, CONF_K_STR, CONF_K_ENUM, CONF_K_NAMES };
typedef struct {
    const char *key;
    uint8_t type;             /* CONF_K_* */
    uint8_t flags;            /* CONF_K_STR: CONF_SEC_NONEMPTY */
    uint32_t off;             /* the member's offset */
    uint32_t size;            /* CONF_K_STR: the buffer; CONF_K_NAMES: one name */
    uint64_t min, max;        /* numbers; CONF_K_NAMES: max = how many */
    const char *const *names; /* CONF_K_ENUM */
    uint32_t count_off;       /* CONF_K_NAMES: the uint32_t count */
} conf_key_t;
#define CONF_K_AT(T, m, ptype) ((uint32_t)(offsetof(T, m) + 0 * sizeof((ptype)0 == &((T *)0)->m)))
#define CONF_KEY_BOOL(T, m, k)                                                                     \
    {                                                                                              \
        .key = (k), .type = CONF_K_BOOL, .off = CONF_K_AT(T, m, uint8_t *)                         \
    }
#define CONF_KEY_U32(T, m, k, lo, hi)                                                              \
    {                                                                                              \
        .key = (k), .type = CONF_K_U32, .off = CONF_K_AT(T, m, uint32_t *), .min = (lo),           \
        .max = (hi)                                                                                \
    }
#define CONF_KEY_U64(T, m, k, lo, hi)                                                              \
    {                                                                                              \
        .key = (k), .type = CONF_K_U64, .off = CONF_K_AT(T, m, uint64_t *), .min = (lo),           \
        .max = (hi)                                                                                \
    }
#define CONF_KEY_MS(T, m, k, lo, hi)                                                               \
    {                                                                                              \
        .key = (k), .type = CONF_K_MS, .off = CONF_K_AT(T, m, uint32_t *), .min = (lo),            \
        .max = (hi)                                                                                \
    }
#define CONF_KEY_STR(T, m, k, fl)                                                                  \
    {                                                                                              \
        .key = (k), .type = CONF_K_STR, .flags = (fl),                                             \
        .off = CONF_K_AT(T, m, char(*)[sizeof(((T *)0)->m)]), .size = sizeof(((T *)0)->m)          \
    }
#define CONF_KEY_ENUM(T, m, k, nm)                                                                 \
    {                                                                                              \
        .key = (k), .type = CONF_K_ENUM, .off = CONF_K_AT(T, m, uint8_t *), .names = (nm)          \
    }
#define CONF_KEY_NAMES(T, m, n, k, most)                                                           \
    {                                                                                              \
        .key = (k), .type = CONF_K_NAMES, .off = (uint32_t)offsetof(T, m),                         \
        .size = sizeof(((T *)0)->m[0]), .max = (most), .count_off = CONF_K_AT(T, n, uint32_t *)    \
    }
#define CONF_KEYS(t) (t), (sizeof(t) / sizeof((t)[0]))
/* Read the n keys of table k into values: 0, or the first reader's -1. */
int conf_sec_keys(conf_sec_t *s, const conf_key_t *k, size_t n, void *values);
/* Show them (a section's walk function calls it). */
void conf_keys_walk(const conf_key_t *k, size_t n, const void *values, conf_visit_fn fn, void *ud);

#endif
