/* test_conf.c -- conf_defaults() and conf_load(): every key, the example
 * file, and every error class with its exact "PATH:LINE: key" prefix.
 * Each case writes its YAML to a mkstemp() file under /tmp.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "module.h"
#include "util.h"

/* ---- helpers ---- */

static void write_tmp(char *path, size_t pathlen, const char *text, size_t len)
{
    snprintf(path, pathlen, "/tmp/antenna_test_conf_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
}

/* Write `yaml`, load it over *c, remove the file; path gets the name. */
static int load_yaml_n(conf_t *c, const char *yaml, size_t len, char *path, size_t pathlen,
                       char *err, size_t errlen)
{
    write_tmp(path, pathlen, yaml, len);
    int rc = conf_load(c, path, err, errlen);
    unlink(path);
    return rc;
}

static int load_yaml(conf_t *c, const char *yaml, char *err, size_t errlen)
{
    char path[64];
    return load_yaml_n(c, yaml, strlen(yaml), path, sizeof(path), err, errlen);
}

static void assert_conf_equal(const conf_t *a, const conf_t *b)
{
    assert_int_equal(a->workers, b->workers);
    assert_int_equal(a->workers_coalesce_us, b->workers_coalesce_us);
    assert_int_equal(a->log_level, b->log_level);
    assert_string_equal(a->log_file, b->log_file);
    assert_int_equal(a->nlisteners, b->nlisteners);
    for (uint32_t i = 0; i < a->nlisteners && i < CONF_MAX_LISTENERS; i++) {
        assert_string_equal(a->listeners[i].name, b->listeners[i].name);
        assert_string_equal(a->listeners[i].address, b->listeners[i].address);
        assert_int_equal(a->listeners[i].port, b->listeners[i].port);
        assert_int_equal(a->listeners[i].max_connections, b->listeners[i].max_connections);
        assert_int_equal(a->listeners[i].transport, b->listeners[i].transport);
        assert_int_equal(a->listeners[i].proxy_protocol, b->listeners[i].proxy_protocol);
        assert_int_equal(a->listeners[i].handshake_timeout, b->listeners[i].handshake_timeout);
        assert_int_equal(a->listeners[i].tls_min_version, b->listeners[i].tls_min_version);
        assert_int_equal(a->listeners[i].require_client_cert, b->listeners[i].require_client_cert);
        assert_string_equal(a->listeners[i].cert_file, b->listeners[i].cert_file);
        assert_string_equal(a->listeners[i].key_file, b->listeners[i].key_file);
        assert_string_equal(a->listeners[i].ca_file, b->listeners[i].ca_file);
        assert_string_equal(a->listeners[i].ciphers, b->listeners[i].ciphers);
        assert_string_equal(a->listeners[i].ws_path, b->listeners[i].ws_path);
        assert_int_equal(a->listeners[i].ws_max_frame, b->listeners[i].ws_max_frame);
        assert_int_equal(a->listeners[i].cert_username, b->listeners[i].cert_username);
    }
    assert_int_equal(a->max_packet_size, b->max_packet_size);
    assert_int_equal(a->connect_timeout, b->connect_timeout);
    assert_int_equal(a->max_keepalive, b->max_keepalive);
    assert_int_equal(a->max_inflight, b->max_inflight);
    assert_int_equal(a->max_queued, b->max_queued);
    assert_int_equal(a->retry_interval, b->retry_interval);
    assert_int_equal(a->session_expiry, b->session_expiry);
    assert_int_equal(a->allow_anonymous, b->allow_anonymous);
    assert_int_equal(a->sys_interval, b->sys_interval);
}

/* Load `yaml` (len bytes) and expect -1 with err containing
 * "PATH:LINE: KEY" and leaving the defaults untouched. */
static void expect_error_n(const char *yaml, size_t len, int line, const char *key)
{
    conf_t c, d;
    char path[64], err[512], want[256];
    conf_defaults(&c);
    conf_defaults(&d);
    int rc = load_yaml_n(&c, yaml, len, path, sizeof(path), err, sizeof(err));
    snprintf(want, sizeof(want), "%s:%d: %s", path, line, key);
    if (rc != -1 || strstr(err, want) == NULL)
        print_error("yaml:\n%s\nwant: \"%s\"\ngot rc=%d: \"%s\"\n", yaml, want, rc, err);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, want));
    assert_conf_equal(&c, &d);
}

static void expect_error(const char *yaml, int line, const char *key)
{
    expect_error_n(yaml, strlen(yaml), line, key);
}

static void expect_ok(const char *yaml, conf_t *c)
{
    char err[512] = "";
    conf_defaults(c);
    int rc = load_yaml(c, yaml, err, sizeof(err));
    if (rc != 0)
        print_error("yaml:\n%s\nunexpected error: %s\n", yaml, err);
    assert_int_equal(rc, 0);
}

/* ---- defaults and valid files ---- */

/* ---- units and suggestions ---- */

static void test_units(void **state)
{
    (void)state;
    conf_t c;
    expect_ok("mqtt:\n  max_packet_size: 256KB\n  session_expiry: 2h\n  retry_interval: 90s\n"
              "  sys_interval: 1m\n"
              "limits:\n  max_queued_bytes: 64MiB\n  memory_high_water: 2g\n"
              "  max_byte_rate: 512k\n  slow_subscriber_timeout: 1d\n"
              "persistence:\n  sync_interval_ms: 2s\n"
              "api:\n  timeout_ms: 1500ms\n  request_timeout_s: 1min\n",
              &c);
    assert_int_equal(c.max_packet_size, 256 * 1024);
    assert_int_equal(c.session_expiry, 7200);
    assert_int_equal(c.retry_interval, 90);
    assert_int_equal(c.sys_interval, 60);
    assert_int_equal(c.max_queued_bytes, 64ull << 20);
    assert_int_equal(c.memory_high_water, 2ull << 30);
    assert_int_equal(c.max_byte_rate, 512 * 1024);
    assert_int_equal(c.slow_subscriber_timeout, 86400);
    assert_int_equal(c.sync_interval_ms, 2000);
    assert_int_equal(c.api_timeout_ms, 1500);
    assert_int_equal(c.api_request_timeout_s, 60);
    /* plain integers still mean the key's own unit */
    expect_ok("mqtt:\n  session_expiry: 7200\n", &c);
    assert_int_equal(c.session_expiry, 7200);
    /* a duration finer than seconds, an unknown unit, a unit on a count,
     * a unit without a number, a result out of range */
    expect_error("mqtt:\n  retry_interval: 1500ms\n", 2, "mqtt.retry_interval");
    expect_error("mqtt:\n  max_packet_size: 12XB\n", 2, "mqtt.max_packet_size");
    expect_error("mqtt:\n  max_inflight: 5k\n", 2, "mqtt.max_inflight");
    expect_error("mqtt:\n  max_packet_size: KB\n", 2, "mqtt.max_packet_size");
    expect_error("mqtt:\n  max_packet_size: 1T\n", 2, "mqtt.max_packet_size");
    expect_error("limits:\n  max_queued_bytes: 99999999999999999999KB\n", 2,
                 "limits.max_queued_bytes");
    expect_error("mqtt:\n  retry_interval: \"30s\"\n", 2, "mqtt.retry_interval");
}

static void test_did_you_mean(void **state)
{
    (void)state;
    /* the distance rule itself (util.h) */
    an_near_t nr = AN_NEAR("max_infligth");
    an_near_try(&nr, "max_queued");
    an_near_try(&nr, "max_inflight");
    an_near_try(&nr, "max_infight_x");
    assert_string_equal(nr.best, "max_inflight");
    assert_int_equal(nr.dist, 2);
    nr = AN_NEAR("port");
    an_near_try(&nr, "sort"); /* 1 edit: near enough for 4 characters */
    an_near_try(&nr, "pool"); /* 2 edits: too far */
    assert_string_equal(nr.best, "sort");
    nr = AN_NEAR("abc");
    an_near_try(&nr, "xyz");
    assert_null(nr.best);
    conf_t c;
    char err[512] = "";
    conf_defaults(&c);
    assert_int_equal(load_yaml(&c, "mqtt:\n  max_infligth: 5\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "unknown key (did you mean \"max_inflight\"?)"));
    conf_defaults(&c);
    assert_int_equal(
        load_yaml(&c, "listeners:\n  - name: a\n    port: 1\n    adress: ::1\n", err, sizeof(err)),
        -1);
    assert_non_null(
        strstr(err, ":4: listeners[0].adress: unknown key (did you mean \"address\"?)"));
    conf_defaults(&c);
    assert_int_equal(load_yaml(&c, "persistance:\n  enabled: true\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "did you mean \"persistence\"?"));
    /* nothing near: no suggestion */
    conf_defaults(&c);
    assert_int_equal(load_yaml(&c, "bogus: 1\n", err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":1: bogus: unknown key"));
    assert_null(strstr(err, "did you mean"));
}

static void test_defaults(void **state)
{
    (void)state;
    conf_t c;
    memset(&c, 0xab, sizeof(c));
    conf_defaults(&c);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.workers_coalesce_us, 0);
    assert_int_equal(c.log_level, AN_LOG_INFO);
    assert_string_equal(c.log_file, "");
    assert_int_equal(c.nlisteners, 1);
    assert_string_equal(c.listeners[0].name, "mqtt");
    assert_string_equal(c.listeners[0].address, "127.0.0.1");
    assert_int_equal(c.listeners[0].port, 1883);
    assert_int_equal(c.listeners[0].max_connections, 0);
    assert_int_equal(c.max_packet_size, 1048576);
    assert_int_equal(c.connect_timeout, 10);
    assert_int_equal(c.max_keepalive, 65535);
    assert_int_equal(c.max_inflight, 32);
    assert_int_equal(c.max_queued, 1000);
    assert_int_equal(c.retry_interval, 20);
    assert_int_equal(c.session_expiry, 7200);
    assert_int_equal(c.allow_anonymous, 1);
    assert_int_equal(c.sys_interval, 10);
}

static void test_example_file(void **state)
{
    (void)state;
    static const char *const candidates[] = {
#ifdef ANTENNA_SOURCE_DIR
        ANTENNA_SOURCE_DIR "/config.example.yaml",
#endif
        "config.example.yaml",
        "../config.example.yaml",
        "../../config.example.yaml",
    };
    const char *path = NULL;
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        if (access(candidates[i], R_OK) == 0) {
            path = candidates[i];
            break;
        }
    }
    if (path == NULL)
        fail_msg("config.example.yaml not found in ., .. or ../..");

    conf_t c, d;
    char err[512] = "";
    conf_defaults(&d);
    module_conf_defaults(&d); /* the modules' sections are in the file too */
    /* Load over non-default values: the file must set every key. */
    memset(&c, 0, sizeof(c));
    c.log_level = AN_LOG_DEBUG;
    c.max_packet_size = 99;
    c.nlisteners = 3;
    module_conf_defaults(&c);
    int rc = conf_load(&c, path, err, sizeof(err));
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_string_equal(err, "");
    assert_conf_equal(&c, &d);

    /* And over the defaults too. */
    conf_defaults(&c);
    module_conf_defaults(&c);
    assert_int_equal(conf_load(&c, path, err, sizeof(err)), 0);
    assert_conf_equal(&c, &d);
}

static void test_every_key(void **state)
{
    (void)state;
    conf_t c;
    expect_ok("workers: 8\n"
              "log:\n"
              "  level: debug\n"
              "  file: /var/log/antenna.log\n"
              "listeners:\n"
              "  - name: public\n"
              "    address: 0.0.0.0\n"
              "    port: 8883\n"
              "    max_connections: 5000\n"
              "mqtt:\n"
              "  max_packet_size: 65536\n"
              "  connect_timeout: 30\n"
              "  max_keepalive: 600\n"
              "  max_inflight: 100\n"
              "  max_queued: 50000\n"
              "  retry_interval: 5\n"
              "  session_expiry: 0\n"
              "  allow_anonymous: false\n"
              "  sys_interval: 0\n",
              &c);
    assert_int_equal(c.workers, 8);
    assert_int_equal(c.log_level, AN_LOG_DEBUG);
    assert_string_equal(c.log_file, "/var/log/antenna.log");
    assert_int_equal(c.nlisteners, 1);
    assert_string_equal(c.listeners[0].name, "public");
    assert_string_equal(c.listeners[0].address, "0.0.0.0");
    assert_int_equal(c.listeners[0].port, 8883);
    assert_int_equal(c.listeners[0].max_connections, 5000);
    assert_int_equal(c.max_packet_size, 65536);
    assert_int_equal(c.connect_timeout, 30);
    assert_int_equal(c.max_keepalive, 600);
    assert_int_equal(c.max_inflight, 100);
    assert_int_equal(c.max_queued, 50000);
    assert_int_equal(c.retry_interval, 5);
    assert_int_equal(c.session_expiry, 0);
    assert_int_equal(c.allow_anonymous, 0);
    assert_int_equal(c.sys_interval, 0);
}

static void test_partial_keeps_current(void **state)
{
    (void)state;
    conf_t c;
    char err[256];
    conf_defaults(&c);
    c.max_inflight = 7;
    c.workers = 3;
    assert_int_equal(load_yaml(&c, "mqtt:\n  max_queued: 5\n", err, sizeof(err)), 0);
    assert_int_equal(c.max_inflight, 7);
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.max_queued, 5);
    assert_int_equal(c.nlisteners, 1);
    assert_int_equal(c.listeners[0].port, 1883);
}

static void test_multiple_listeners(void **state)
{
    (void)state;
    conf_t c;
    expect_ok("listeners:\n"
              "  - name: a\n"
              "    port: 1\n"
              "  - {name: b, address: 10.0.0.1, port: 0, max_connections: 9}\n"
              "  - port: 65535\n",
              &c);
    assert_int_equal(c.nlisteners, 3);
    assert_string_equal(c.listeners[0].name, "a");
    assert_string_equal(c.listeners[0].address, "127.0.0.1"); /* default */
    assert_int_equal(c.listeners[0].port, 1);
    assert_int_equal(c.listeners[0].max_connections, 0);
    assert_string_equal(c.listeners[1].name, "b");
    assert_string_equal(c.listeners[1].address, "10.0.0.1");
    assert_int_equal(c.listeners[1].port, 0);
    assert_int_equal(c.listeners[1].max_connections, 9);
    assert_string_equal(c.listeners[2].name, "mqtt"); /* default */
    assert_int_equal(c.listeners[2].port, 65535);

    /* A second load replaces the list, it does not append. */
    char err[256];
    assert_int_equal(load_yaml(&c, "listeners: [{port: 7}]\n", err, sizeof(err)), 0);
    assert_int_equal(c.nlisteners, 1);
    assert_int_equal(c.listeners[0].port, 7);
    assert_string_equal(c.listeners[0].name, "mqtt");
}

static void test_listener_transport(void **state)
{
    (void)state;
    conf_t c;
    expect_ok("listeners:\n"
              "  - port: 1883\n"
              "    proxy_protocol: v2\n"
              "  - name: mqtts\n"
              "    port: 8883\n"
              "    transport: tls\n"
              "    cert_file: /c.pem\n"
              "    key_file: /k.pem\n"
              "    ca_file: /ca.pem\n"
              "    require_client_cert: true\n"
              "    tls_min_version: \"1.3\"\n"
              "    ciphers: ECDHE+AESGCM\n"
              "    handshake_timeout: 3\n"
              "    proxy_protocol: v1\n"
              "    cert_username: san\n",
              &c);
    assert_int_equal(c.nlisteners, 2);
    assert_int_equal(c.listeners[0].transport, CONF_TRANSPORT_TCP);
    assert_int_equal(c.listeners[0].proxy_protocol, CONF_PROXY_V2);
    assert_int_equal(c.listeners[0].handshake_timeout, 10);
    assert_string_equal(c.listeners[0].ciphers, CONF_DEFAULT_CIPHERS);
    assert_int_equal(c.listeners[1].transport, CONF_TRANSPORT_TLS);
    assert_string_equal(c.listeners[1].cert_file, "/c.pem");
    assert_string_equal(c.listeners[1].key_file, "/k.pem");
    assert_string_equal(c.listeners[1].ca_file, "/ca.pem");
    assert_int_equal(c.listeners[1].require_client_cert, 1);
    assert_int_equal(c.listeners[1].tls_min_version, CONF_TLS_1_3);
    assert_string_equal(c.listeners[1].ciphers, "ECDHE+AESGCM");
    assert_int_equal(c.listeners[1].handshake_timeout, 3);
    assert_int_equal(c.listeners[1].proxy_protocol, CONF_PROXY_V1);
    assert_int_equal(c.listeners[0].cert_username, CONF_CERT_USER_NONE);
    assert_int_equal(c.listeners[1].cert_username, CONF_CERT_USER_SAN);

    expect_ok("listeners:\n"
              "  - port: 8083\n"
              "    transport: ws\n"
              "  - port: 8084\n"
              "    transport: wss\n"
              "    cert_file: /c.pem\n"
              "    key_file: /k.pem\n"
              "    ws_path: /broker/ws\n"
              "    ws_max_frame: 4096\n",
              &c);
    assert_int_equal(c.listeners[0].transport, CONF_TRANSPORT_WS);
    assert_string_equal(c.listeners[0].ws_path, "/mqtt");
    assert_int_equal(c.listeners[0].ws_max_frame, 1048576);
    assert_int_equal(c.listeners[1].transport, CONF_TRANSPORT_WSS);
    assert_string_equal(c.listeners[1].ws_path, "/broker/ws");
    assert_int_equal(c.listeners[1].ws_max_frame, 4096);
    expect_error("listeners:\n  - port: 1\n    transport: wss\n    key_file: /k\n", 2,
                 "listeners[0].cert_file");
    expect_error("listeners:\n  - port: 1\n    transport: ws\n    ws_path: mqtt\n", 4,
                 "listeners[0].ws_path");
    expect_error("listeners:\n  - port: 1\n    transport: ws\n    ws_path: \"/a b\"\n", 4,
                 "listeners[0].ws_path");
    expect_error("listeners:\n  - port: 1\n    transport: ws\n    ws_path: \"\"\n", 4,
                 "listeners[0].ws_path");
    expect_error("listeners:\n  - port: 1\n    transport: ws\n    ws_max_frame: 8\n", 4,
                 "listeners[0].ws_max_frame");
    expect_error("listeners:\n  - port: 1\n    ws_path: /mqtt\n", 3, "listeners[0].ws_path");
    /* ws_allowed_origins: none = any; each a serialized origin */
    assert_int_equal(c.listeners[0].nws_allowed_origins, 0);
    expect_ok("listeners:\n  - port: 1\n    transport: ws\n    ws_allowed_origins:\n"
              "      - https://app.example.com\n      - \"http://localhost:8080\"\n"
              "      - \"http://[::1]:80\"\n",
              &c);
    assert_int_equal(c.listeners[0].nws_allowed_origins, 3);
    assert_string_equal(c.listeners[0].ws_allowed_origins[1], "http://localhost:8080");
    expect_error("listeners:\n  - port: 1\n    transport: ws\n"
                 "    ws_allowed_origins: [https://a.example/]\n",
                 4, "listeners[0].ws_allowed_origins");
    expect_error("listeners:\n  - port: 1\n    transport: ws\n"
                 "    ws_allowed_origins: [a.example]\n",
                 4, "listeners[0].ws_allowed_origins");
    expect_error("listeners:\n  - port: 1\n    transport: ws\n"
                 "    ws_allowed_origins: [\"http://a:port\"]\n",
                 4, "listeners[0].ws_allowed_origins");
    expect_error("listeners:\n  - port: 1\n    ws_allowed_origins: [http://a]\n", 3,
                 "listeners[0].ws_allowed_origins");
    expect_error("listeners:\n  - port: 1\n    transport: tls\n    cert_file: /c\n"
                 "    key_file: /k\n    ws_max_frame: 100\n",
                 6, "listeners[0].ws_max_frame");
    expect_error("listeners:\n  - port: 1\n    transport: quic\n", 3, "listeners[0].transport");
    expect_error("listeners:\n  - port: 1\n    transport: tls\n    key_file: /k\n", 2,
                 "listeners[0].cert_file");
    expect_error("listeners:\n  - port: 1\n    transport: tls\n    cert_file: /c\n", 2,
                 "listeners[0].key_file");
    expect_error("listeners:\n  - port: 1\n    transport: tls\n    cert_file: /c\n"
                 "    key_file: /k\n    require_client_cert: yes\n",
                 6, "listeners[0].ca_file");
    expect_error("listeners:\n  - port: 1\n    cert_file: /c\n", 3, "listeners[0].cert_file");
    expect_error("listeners:\n  - port: 1\n    cert_username: cn\n", 3,
                 "listeners[0].cert_username");
    expect_error("listeners:\n  - port: 1\n    transport: tls\n    cert_file: /c\n"
                 "    key_file: /k\n    cert_username: cn\n",
                 6, "listeners[0].ca_file");
    expect_error("listeners:\n  - port: 1\n    transport: tls\n    cert_file: /c\n"
                 "    key_file: /k\n    ca_file: /ca\n    cert_username: uid\n",
                 7, "listeners[0].cert_username");
    expect_error("listeners:\n  - port: 1\n    tls_min_version: \"1.1\"\n", 3,
                 "listeners[0].tls_min_version");
    expect_error("listeners:\n  - port: 1\n    proxy_protocol: v3\n", 3,
                 "listeners[0].proxy_protocol");
    expect_error("listeners:\n  - port: 1\n    handshake_timeout: 0\n", 3,
                 "listeners[0].handshake_timeout");
    expect_error("listeners:\n  - port: 1\n    ciphers: \"\"\n", 3, "listeners[0].ciphers");
}

static void test_max_listeners(void **state)
{
    (void)state;
    char yaml[4096];
    size_t n = (size_t)snprintf(yaml, sizeof(yaml), "listeners:\n");
    for (int i = 0; i < CONF_MAX_LISTENERS; i++)
        n += (size_t)snprintf(yaml + n, sizeof(yaml) - n, "  - {name: l%d, port: %d}\n", i,
                              1000 + i);
    conf_t c;
    expect_ok(yaml, &c);
    assert_int_equal(c.nlisteners, CONF_MAX_LISTENERS);
    assert_string_equal(c.listeners[CONF_MAX_LISTENERS - 1].name, "l15");
    assert_int_equal(c.listeners[CONF_MAX_LISTENERS - 1].port, 1015);

    /* One more: the 17th item is on line 18. */
    snprintf(yaml + n, sizeof(yaml) - n, "  - {name: extra, port: 2000}\n");
    expect_error(yaml, CONF_MAX_LISTENERS + 2, "listeners: too many listeners");
}

static void test_ipv6(void **state)
{
    (void)state;
    conf_t c;
    expect_ok("listeners:\n"
              "  - address: \"::\"\n"
              "    port: 1883\n"
              "  - address: ::1\n"
              "    port: 1884\n"
              "  - address: 'fe80::1:2:3:4'\n"
              "    port: 1885\n"
              "  - address: ::ffff:192.0.2.1\n"
              "    port: 1886\n",
              &c);
    assert_int_equal(c.nlisteners, 4);
    assert_string_equal(c.listeners[0].address, "::");
    assert_string_equal(c.listeners[1].address, "::1");
    assert_string_equal(c.listeners[2].address, "fe80::1:2:3:4");
    assert_string_equal(c.listeners[3].address, "::ffff:192.0.2.1");
}

static void test_scalar_forms(void **state)
{
    (void)state;
    conf_t c;
    static const struct {
        const char *text;
        int value;
    } bools[] = {
        {"true", 1}, {"false", 0}, {"yes", 1},   {"no", 0},  {"on", 1},
        {"off", 0},  {"True", 1},  {"FALSE", 0}, {"Yes", 1}, {"OFF", 0},
    };
    for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "mqtt:\n  allow_anonymous: %s\n", bools[i].text);
        expect_ok(yaml, &c);
        assert_int_equal(c.allow_anonymous, bools[i].value);
    }
    static const struct {
        const char *text;
        int level;
    } levels[] = {
        {"error", AN_LOG_ERROR}, {"warn", AN_LOG_WARN},       {"info", AN_LOG_INFO},
        {"debug", AN_LOG_DEBUG}, {"\"debug\"", AN_LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "log: {level: %s}\n", levels[i].text);
        expect_ok(yaml, &c);
        assert_int_equal(c.log_level, levels[i].level);
    }
    /* Comments, flow style, quoted keys, "0" and a document marker. */
    expect_ok("--- # doc\n\"workers\": 0   # trailing comment\nmqtt: {max_queued: 0}\n...\n", &c);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.max_queued, 0);
    /* Strings: a quoted empty string and an unquoted null are "". */
    expect_ok("log:\n  file: \"\"\n", &c);
    assert_string_equal(c.log_file, "");
    expect_ok("log:\n  file:\n", &c);
    assert_string_equal(c.log_file, "");
    expect_ok("log:\n  file: ~\n", &c);
    assert_string_equal(c.log_file, "");
    expect_ok("log:\n  file: '/tmp/a b.log'\n", &c);
    assert_string_equal(c.log_file, "/tmp/a b.log");
    /* Longest strings that fit. */
    char yaml[1024];
    char name[32], file[256];
    memset(name, 'n', 31);
    name[31] = '\0';
    memset(file, 'f', 255);
    file[255] = '\0';
    snprintf(yaml, sizeof(yaml), "log: {file: %s}\nlisteners: [{name: %s, port: 1}]\n", file, name);
    expect_ok(yaml, &c);
    assert_string_equal(c.log_file, file);
    assert_string_equal(c.listeners[0].name, name);
}

/* Every integer key at both bounds, and one past each bound. */
static void test_integer_ranges(void **state)
{
    (void)state;
    static const struct {
        const char *section; /* NULL = top level, "L" = in a listener */
        const char *key;
        const char *path;
        const char *min, *max, *below, *above;
    } keys[] = {
        {NULL, "workers", "workers", "0", "256", NULL, "257"},
        {NULL, "workers_coalesce_us", "workers_coalesce_us", "0", "10000", NULL, "10001"},
        {"L", "port", "listeners[0].port", "0", "65535", NULL, "65536"},
        {"L", "max_connections", "listeners[0].max_connections", "0", "4294967295", NULL,
         "4294967296"},
        {"mqtt", "max_packet_size", "mqtt.max_packet_size", "16", "268435455", "15", "268435456"},
        {"mqtt", "connect_timeout", "mqtt.connect_timeout", "1", "3600", "0", "3601"},
        {"mqtt", "max_keepalive", "mqtt.max_keepalive", "1", "65535", "0", "65536"},
        {"mqtt", "max_inflight", "mqtt.max_inflight", "1", "65535", "0", "65536"},
        {"mqtt", "max_queued", "mqtt.max_queued", "0", "10000000", NULL, "10000001"},
        {"mqtt", "retry_interval", "mqtt.retry_interval", "1", "3600", "0", "3601"},
        {"mqtt", "session_expiry", "mqtt.session_expiry", "0", "4294967295", NULL, "4294967296"},
        {"mqtt", "sys_interval", "mqtt.sys_interval", "0", "86400", NULL, "86401"},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *vals[4] = {keys[i].min, keys[i].max, keys[i].below, keys[i].above};
        for (int j = 0; j < 4; j++) {
            char yaml[256], want[128];
            if (vals[j] == NULL)
                continue;
            /* The value is always on line 3. */
            if (keys[i].section == NULL)
                snprintf(yaml, sizeof(yaml), "# range\n\n%s: %s\n", keys[i].key, vals[j]);
            else if (strcmp(keys[i].section, "L") == 0)
                snprintf(yaml, sizeof(yaml), "listeners:\n  - %s\n    %s: %s\n",
                         strcmp(keys[i].key, "port") == 0 ? "name: x" : "port: 1", keys[i].key,
                         vals[j]);
            else
                snprintf(yaml, sizeof(yaml), "\n%s:\n  %s: %s\n", keys[i].section, keys[i].key,
                         vals[j]);
            if (j < 2) {
                conf_t c;
                expect_ok(yaml, &c);
            } else {
                snprintf(want, sizeof(want), "%s: %s is out of range", keys[i].path, vals[j]);
                expect_error(yaml, 3, want);
            }
        }
    }
}

static void test_empty_files(void **state)
{
    (void)state;
    conf_t c, d;
    conf_defaults(&d);
    expect_ok("", &c);
    assert_conf_equal(&c, &d);
    expect_ok("# nothing but comments\n\n   # indented comment\n", &c);
    assert_conf_equal(&c, &d);
    expect_ok("---\n", &c);
    assert_conf_equal(&c, &d);
    expect_ok("~\n", &c);
    assert_conf_equal(&c, &d);
    /* Sections with every key commented out. */
    expect_ok("log:\n  # level: debug\nmqtt:\n  # max_inflight: 1\n", &c);
    assert_conf_equal(&c, &d);
}

/* ---- errors ---- */

static void test_err_missing_file(void **state)
{
    (void)state;
    conf_t c, d;
    char err[256];
    conf_defaults(&c);
    conf_defaults(&d);
    assert_int_equal(conf_load(&c, "/nonexistent/antenna.yaml", err, sizeof(err)), -1);
    assert_string_equal(err, "/nonexistent/antenna.yaml: cannot open: No such file or directory");
    assert_conf_equal(&c, &d);

    assert_int_equal(conf_load(&c, "/tmp", err, sizeof(err)), -1);
    assert_string_equal(err, "/tmp: cannot open: Is a directory");
}

static void test_err_unknown_key(void **state)
{
    (void)state;
    expect_error("workers: 1\nworkerz: 2\n", 2, "workerz: unknown key");
    expect_error("log:\n  level: info\n  levle: info\n", 3, "log.levle: unknown key");
    expect_error("mqtt:\n\n  max_inflight: 3\n  foo: {a: 1}\n", 4, "mqtt.foo: unknown key");
    expect_error("listeners:\n  - port: 1\n  - port: 2\n    nmae: x\n", 4,
                 "listeners[1].nmae: unknown key");
    /* Key names are case-sensitive. */
    expect_error("Workers: 1\n", 1, "Workers: unknown key");
    /* Merge keys are not supported. */
    expect_error("x: &d {max_inflight: 3}\n", 1, "x: unknown key");
    expect_error("mqtt:\n  <<: {max_inflight: 3}\n", 2, "mqtt.<<: unknown key");
    /* A very long key is cut in the message, not overflowed. */
    char yaml[600], key[400];
    memset(key, 'k', 399);
    key[399] = '\0';
    snprintf(yaml, sizeof(yaml), "mqtt:\n  %s: 1\n", key);
    expect_error(yaml, 2,
                 "mqtt.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
}

static void test_err_duplicate_key(void **state)
{
    (void)state;
    expect_error("workers: 1\nlog: {}\nworkers: 2\n", 3, "workers: duplicate key");
    expect_error("mqtt:\n  max_inflight: 1\n  max_queued: 1\n  max_inflight: 2\n", 4,
                 "mqtt.max_inflight: duplicate key");
    expect_error("listeners:\n  - {port: 1, port: 2}\n", 2, "listeners[0].port: duplicate key");
    expect_error("mqtt: {}\nmqtt: {}\n", 2, "mqtt: duplicate key");
}

static void test_err_wrong_type(void **state)
{
    (void)state;
    /* A mapping or a sequence where a scalar is expected: the key's line. */
    expect_error("mqtt:\n  max_inflight:\n    a: 1\n", 2,
                 "mqtt.max_inflight: expected an integer, got a mapping");
    expect_error("workers: [1]\n", 1, "workers: expected an integer, got a sequence");
    expect_error("log:\n  level: [info]\n", 2, "log.level: expected a level name");
    expect_error("log:\n  file: {a: b}\n", 2, "log.file: expected a string");
    expect_error("mqtt:\n  allow_anonymous: [true]\n", 2, "mqtt.allow_anonymous: expected true");
    expect_error("listeners:\n  - name: [a]\n    port: 1\n", 2,
                 "listeners[0].name: expected a string");
    /* A scalar or a sequence where a mapping is expected. */
    expect_error("\nmqtt: 5\n", 2, "mqtt: expected a mapping, got a scalar");
    expect_error("log:\n  - level: info\n", 1, "log: expected a mapping, got a sequence");
    expect_error("listeners:\n  - 1883\n", 2, "listeners[0]: expected a mapping, got a scalar");
    expect_error("listeners:\n  port: 1883\n", 1, "listeners: expected a sequence");
    /* The top level. */
    expect_error("just a string\n", 1, "top level: expected a mapping, got a scalar");
    expect_error("\n- workers: 1\n", 2, "top level: expected a mapping, got a sequence");
    /* A key that is not a scalar. */
    expect_error("mqtt:\n  ? [a, b]\n  : 1\n", 2, "mqtt: a key must be a scalar");
}

static void test_err_integers(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "-1", "+5", "10s", "1.5", "0x10", "1e3", "1_000", "ten", "1 2", "", "~", "true",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "# c\nmqtt:\n  max_inflight: %s\n", bad[i]);
        expect_error(yaml, 3, "mqtt.max_inflight: expected an integer");
    }
    /* Only digits, but not a plain decimal. */
    expect_error("mqtt:\n  max_inflight: \"10\"\n", 2,
                 "mqtt.max_inflight: expected an integer, got a quoted string");
    expect_error("mqtt:\n  max_inflight: '10'\n", 2, "mqtt.max_inflight: expected an integer");
    expect_error("mqtt:\n  max_inflight: 010\n", 2, "mqtt.max_inflight: \"010\": leading zeros");
    expect_error("mqtt:\n  max_inflight: 00\n", 2, "mqtt.max_inflight: \"00\": leading zeros");
    /* Overflow of 32 and 64 bits is out of range, never wrapped. */
    expect_error("mqtt:\n  session_expiry: 18446744073709551616\n", 2,
                 "mqtt.session_expiry: 18446744073709551616 is out of range 0..4294967295");
    expect_error("mqtt:\n  max_queued: 99999999999999999999999999999999\n", 2,
                 "mqtt.max_queued: 99999999999999999999999999999999 is out of range");
    expect_error("workers: 4294967297\n", 1, "workers: 4294967297 is out of range 0..256");
    expect_error("listeners:\n- port: 18446744073709551617\n", 2,
                 "listeners[0].port: 18446744073709551617 is out of range 0..65535");
}

static void test_err_bool_level(void **state)
{
    (void)state;
    static const char *const bad[] = {"1", "0", "y", "n", "enabled", "\"true\"", "", "~"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "mqtt:\n  max_inflight: 1\n  allow_anonymous: %s\n", bad[i]);
        expect_error(yaml, 3, "mqtt.allow_anonymous: expected true or false");
    }
    expect_error("log:\n  level: verbose\n", 2, "log.level: unknown level \"verbose\"");
    expect_error("log:\n  level:\n", 2, "log.level: unknown level \"\"");
    expect_error("log:\n  level: 3\n", 2, "log.level: unknown level");
}

static void test_err_listeners(void **state)
{
    (void)state;
    /* Missing port: the line of the listener's first key. */
    expect_error("listeners:\n  - port: 1\n  - name: noport\n    address: ::1\n", 3,
                 "listeners[1].port: missing");
    expect_error("listeners: [{port: 1}, {name: x}]\n", 1, "listeners[1].port: missing");
    expect_error("listeners:\n  - {}\n", 2, "listeners[0].port: missing");
    /* Empty list, flow or null. */
    expect_error("workers: 1\nlisteners: []\n", 2, "listeners: the listener list is empty");
    expect_error("workers: 1\nlisteners:\nmqtt: {}\n", 2, "listeners: the listener list is empty");
    /* Addresses. */
    expect_error("listeners:\n  - port: 1\n    address: localhost\n", 3,
                 "listeners[0].address: \"localhost\" is not an IPv4 or IPv6 address");
    expect_error("listeners:\n  - port: 1\n    address: 256.0.0.1\n", 3,
                 "listeners[0].address: \"256.0.0.1\" is not");
    expect_error("listeners:\n  - port: 1\n    address: \"fe80::1%eth0\"\n", 3,
                 "listeners[0].address:");
    expect_error("listeners:\n  - port: 1\n    address: \"\"\n", 3, "listeners[0].address:");
    expect_error("listeners:\n  - port: 1\n    address: 1:2:3:4:5:6:7:8:9\n", 3,
                 "listeners[0].address:");
    /* Names. */
    expect_error("listeners:\n  - port: 1\n    name: \"\"\n", 3,
                 "listeners[0].name: must not be empty");
    expect_error("listeners:\n  - port: 1\n    name: 0123456789012345678901234567890123\n", 3,
                 "listeners[0].name: too long (34 characters, max 31)");
}

static void test_err_strings(void **state)
{
    (void)state;
    char yaml[1024], name[64], file[300];
    memset(name, 'n', 32);
    name[32] = '\0';
    snprintf(yaml, sizeof(yaml), "listeners:\n  - port: 1\n  - port: 2\n    name: %s\n", name);
    expect_error(yaml, 4, "listeners[1].name: too long (32 characters, max 31)");

    memset(file, 'f', 256);
    file[256] = '\0';
    snprintf(yaml, sizeof(yaml), "log:\n  level: info\n  file: \"%s\"\n", file);
    expect_error(yaml, 3, "log.file: too long (256 characters, max 255)");

    /* An escaped NUL would silently truncate the path. */
    expect_error("log:\n  file: \"/tmp/a\\0b\"\n", 2, "log.file: contains a NUL character");
}

static void test_err_yaml_syntax(void **state)
{
    (void)state;
    expect_error("workers: 1\nmqtt:\n  max_inflight: [1,\n  max_queued: 2\n", 5, "yaml: ");
    expect_error("workers: 1\nlog:\n  level: info\n bad: indent\n", 4, "yaml: ");
    expect_error("workers: 1\nlog: \"unterminated\n", 3, "yaml: ");
    expect_error("\n\nworkers: *nope\n", 3, "yaml: found undefined alias");
    expect_error("workers: 1\n\tmqtt: {}\n", 2, "yaml: ");
    /* Invalid UTF-8 on line 3. */
    expect_error("workers: 1\nlog:\n  file: \xff\xfe\n", 3, "yaml: invalid");
    /* A raw NUL byte on line 2. */
    static const char nul[] = "workers: 1\nlog: {file: a\0b}\n";
    expect_error_n(nul, sizeof(nul) - 1, 2, "yaml: ");
    /* Only one document. */
    expect_error("workers: 1\n---\nworkers: 2\n", 3, "yaml: only one document is allowed");
}

/* Aliases are resolved by libyaml; a cycle must not hang the walk. */
static void test_aliases(void **state)
{
    (void)state;
    conf_t c;
    expect_ok("mqtt:\n  max_inflight: &n 12\n  max_queued: *n\n", &c);
    assert_int_equal(c.max_inflight, 12);
    assert_int_equal(c.max_queued, 12);
    expect_error("listeners: &a [*a]\n", 1, "listeners[0]: expected a mapping, got a sequence");
    expect_error("log: &a {level: *a}\n", 1, "log.level: expected a level name, got a mapping");
}

static void test_err_buffer(void **state)
{
    (void)state;
    conf_t c;
    char path[64], small[16];
    conf_defaults(&c);
    /* NULL / zero-length / short error buffers are safe. */
    assert_int_equal(load_yaml(&c, "bogus: 1\n", NULL, 0), -1);
    assert_int_equal(load_yaml(&c, "bogus: 1\n", small, 0), -1);
    assert_int_equal(load_yaml_n(&c, "bogus: 1\n", 9, path, sizeof(path), small, sizeof(small)),
                     -1);
    assert_int_equal(strlen(small), sizeof(small) - 1);
    assert_memory_equal(small, path, sizeof(small) - 1);
    assert_int_equal(conf_load(&c, "/nonexistent", NULL, 0), -1);
}

/* conf_walk (the API's GET /api/v1/config) shows a listener's unset
 * allow_anonymous as the value that applies, mqtt.allow_anonymous, and
 * every boolean as 0 or 1 (found by fuzz_conf: it passed 2, shown as true). */
struct walk_bools {
    int in_listeners;
    uint64_t anon[4];
    int nanon, bad;
};

static void walk_bool_cb(void *ud, int kind, const char *key, const char *s, uint64_t u)
{
    struct walk_bools *w = ud;
    (void)s;
    if (kind == CONF_V_LIST && key && strcmp(key, "listeners") == 0)
        w->in_listeners = 1;
    if (kind == CONF_V_END && key && strcmp(key, "listeners") == 0)
        w->in_listeners = 0;
    if (kind != CONF_V_BOOL)
        return;
    if (u > 1)
        w->bad++;
    if (w->in_listeners && strcmp(key, "allow_anonymous") == 0 && w->nanon < 4)
        w->anon[w->nanon++] = u;
}

static void test_walk_listener_anonymous(void **state)
{
    (void)state;
    conf_t c;
    expect_ok("mqtt:\n  allow_anonymous: false\nlisteners:\n  - port: 1\n"
              "  - port: 2\n    allow_anonymous: true\n  - port: 3\n"
              "    allow_anonymous: false\n",
              &c);
    struct walk_bools w = {0};
    conf_walk(&c, walk_bool_cb, &w);
    assert_int_equal(w.bad, 0);
    assert_int_equal(w.nanon, 3);
    assert_int_equal(w.anon[0], 0);
    assert_int_equal(w.anon[1], 1);
    assert_int_equal(w.anon[2], 0);
    expect_ok("mqtt:\n  allow_anonymous: true\nlisteners:\n  - port: 1\n", &c);
    memset(&w, 0, sizeof(w));
    conf_walk(&c, walk_bool_cb, &w);
    assert_int_equal(w.bad, 0);
    assert_int_equal(w.nanon, 1);
    assert_int_equal(w.anon[0], 1);
}

/* ---- a module section read and shown through a conf_key_t table ---- */

typedef struct {
    uint8_t on;
    uint32_t n;
    uint64_t big;
    uint32_t wait_ms;
    char name[16];
    uint8_t mode;
    char subs[3][8];
    uint32_t nsubs;
} keys_conf_t;

static const char *const keys_modes[] = {"slow", "fast", NULL};
static const conf_key_t keys_table[] = {
    CONF_KEY_BOOL(keys_conf_t, on, "on"),
    CONF_KEY_U32(keys_conf_t, n, "n", 1, 10),
    CONF_KEY_U64(keys_conf_t, big, "big", 0, 1ull << 40),
    CONF_KEY_MS(keys_conf_t, wait_ms, "wait", 10, 60000),
    CONF_KEY_STR(keys_conf_t, name, "name", CONF_SEC_NONEMPTY),
    CONF_KEY_ENUM(keys_conf_t, mode, "mode", keys_modes),
    CONF_KEY_NAMES(keys_conf_t, subs, nsubs, "subs", 3),
};

static int keys_load(conf_sec_t *s, void *values)
{
    return conf_sec_keys(s, CONF_KEYS(keys_table), values);
}

static void keys_walk(const void *values, conf_visit_fn fn, void *ud)
{
    conf_keys_walk(CONF_KEYS(keys_table), values, fn, ud);
}

struct keys_seen {
    char text[512];
    size_t len;
};

static void keys_cb(void *ud, int kind, const char *key, const char *s, uint64_t u)
{
    struct keys_seen *w = ud;
    if (w->len >= sizeof(w->text) - 64)
        return;
    w->len += (size_t)snprintf(w->text + w->len, sizeof(w->text) - w->len, "%d:%s=%s/%llu;", kind,
                               key ? key : "", s ? s : "", (unsigned long long)u);
}

static keys_conf_t *keys_section(conf_t *c)
{
    conf_defaults(c);
    keys_conf_t *k = conf_section_add(c, "keyed", keys_load, keys_walk, sizeof(keys_conf_t));
    assert_non_null(k);
    k->n = 5;
    snprintf(k->name, sizeof(k->name), "dflt");
    return k;
}

static void test_key_table(void **state)
{
    (void)state;
    conf_t c;
    char err[512] = "";
    keys_section(&c);
    assert_int_equal(load_yaml(&c,
                               "keyed:\n  on: true\n  n: 7\n  big: 1099511627776\n  wait: 2s\n"
                               "  name: abc\n  mode: fast\n  subs: [a/b, c]\n",
                               err, sizeof(err)),
                     0);
    const keys_conf_t *k = conf_section_values(&c, "keyed");
    assert_int_equal(k->on, 1);
    assert_int_equal(k->n, 7);
    assert_true(k->big == 1ull << 40);
    assert_int_equal(k->wait_ms, 2000);
    assert_string_equal(k->name, "abc");
    assert_int_equal(k->mode, 1);
    assert_int_equal(k->nsubs, 2);
    assert_string_equal(k->subs[1], "c");
    /* shown with the keys the file takes, in table order */
    struct keys_seen w = {.len = 0};
    keys_walk(k, keys_cb, &w);
    assert_string_equal(w.text, "6:on=/1;5:n=/7;5:big=/1099511627776;5:wait=/2000;4:name=abc/0;"
                                "4:mode=fast/0;1:subs=/0;4:=a/b/0;4:=c/0;3:subs=/0;");
    /* absent keys keep the defaults */
    keys_section(&c);
    assert_int_equal(load_yaml(&c, "keyed:\n  on: true\n", err, sizeof(err)), 0);
    k = conf_section_values(&c, "keyed");
    assert_int_equal(k->n, 5);
    assert_string_equal(k->name, "dflt");
    /* each reader's error names its key */
    static const char *const bad[][2] = {
        {"keyed:\n  n: 11\n", "keyed.n"},
        {"keyed:\n  wait: 5ms\n", "keyed.wait"},
        {"keyed:\n  name: \"\"\n", "keyed.name"},
        {"keyed:\n  mode: medium\n", "keyed.mode"},
        {"keyed:\n  subs: [a, b, c, d]\n", "keyed.subs"},
        {"keyed:\n  on: maybe\n", "keyed.on"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        keys_section(&c);
        err[0] = '\0';
        assert_int_equal(load_yaml(&c, bad[i][0], err, sizeof(err)), -1);
        if (strstr(err, bad[i][1]) == NULL)
            print_error("%s: %s\n", bad[i][1], err);
        assert_non_null(strstr(err, bad[i][1]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_partial_keeps_current),
        cmocka_unit_test(test_multiple_listeners),
        cmocka_unit_test(test_max_listeners),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_scalar_forms),
        cmocka_unit_test(test_integer_ranges),
        cmocka_unit_test(test_empty_files),
        cmocka_unit_test(test_err_missing_file),
        cmocka_unit_test(test_err_unknown_key),
        cmocka_unit_test(test_err_duplicate_key),
        cmocka_unit_test(test_err_wrong_type),
        cmocka_unit_test(test_err_integers),
        cmocka_unit_test(test_err_bool_level),
        cmocka_unit_test(test_err_listeners),
        cmocka_unit_test(test_listener_transport),
        cmocka_unit_test(test_err_strings),
        cmocka_unit_test(test_err_yaml_syntax),
        cmocka_unit_test(test_aliases),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_did_you_mean),
        cmocka_unit_test(test_err_buffer),
        cmocka_unit_test(test_walk_listener_anonymous),
        cmocka_unit_test(test_key_table),
    };
    return cmocka_run_group_tests_name("conf", tests, NULL, NULL);
}
