/* api_ctl_devices.c -- `antenna ctl devices`: the device registry's
 * commands over its REST API (docs/devices.md):
 *
 *   devices list [k=v ...]                  GET /api/v1/devices (tag=k=v filters)
 *   devices show ID                         GET /api/v1/devices/ID
 *   devices create ID [password=P] [token=T] [cert=FP] [TAG=V ...]
 *   devices delete|disable|enable ID
 *   devices import FILE                     POST /api/v1/devices/import (CSV or
 *                                           JSON lines, told apart by the server)
 *   devices export [csv|jsonl]              the whole registry on stdout
 *   devices shadow ID [DESIRED_JSON]        GET /api/v1/devices/ID/shadow, or
 *                                           PATCH .../shadow/desired {"state": JSON}
 *
 * Runs in the `antenna ctl` process only (one thread); the HTTP request,
 * the key and the URL are api_ctl.c's (api_ctl_http).
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_ctl.h"
#include "util.h"

static int usage(const char *why)
{
    fprintf(stderr,
            "antenna ctl: devices: %s\n"
            "usage: antenna ctl devices list [TAG=V ...] | show ID | create ID [password=P]\n"
            "       [token=T] [cert=FINGERPRINT] [TAG=V ...] | delete ID | disable ID | enable ID\n"
            "       | import FILE | export [csv|jsonl] | shadow ID [DESIRED_JSON]\n",
            why);
    return 2;
}

/* A request; prints the API's error (status >= 400) and returns 1, or 0
 * with the answer's bytes in *out (malloc'd or NULL). */
static int call(ctl_t *c, const char *method, const char *path, const char *ctype, const char *body,
                size_t len, char **out)
{
    long status;
    size_t olen;
    if (api_ctl_http(c, method, path, ctype, body, len, &status, out, &olen) != 0)
        return 1;
    if (status >= 200 && status < 300)
        return 0;
    json_error_t je;
    json_t *e = *out ? json_loads(*out, 0, &je) : NULL;
    const char *msg = json_string_value(json_object_get(e, "error"));
    fprintf(stderr, "antenna ctl: %s %s: HTTP %ld%s%s\n", method, path, status, msg ? ": " : "",
            msg ? msg : "");
    json_decref(e);
    free(*out);
    *out = NULL;
    return 1;
}

/* "/api/v1/devices/" + the id escaped. */
static char *dev_path(const char *id, const char *verb)
{
    char *esc = curl_easy_escape(NULL, id, 0);
    size_t n = strlen(esc) + 64;
    char *p = an_malloc(n);
    snprintf(p, n, "/api/v1/devices/%s%s%s", esc, verb ? "/" : "", verb ? verb : "");
    curl_free(esc);
    return p;
}

static void print_device(ctl_t *c, const char *raw)
{
    json_error_t je;
    json_t *d = raw ? json_loads(raw, 0, &je) : NULL;
    if (d == NULL)
        return;
    if (api_ctl_json(c)) {
        json_dumpf(d, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else {
        const char *k;
        json_t *v;
        json_object_foreach(d, k, v)
        {
            char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            printf("%-12s %s\n", k, s ? s : json_string_value(v));
            free(s);
        }
    }
    json_decref(d);
}

static int cmd_list(ctl_t *c)
{
    char path[2048] = "/api/v1/devices?limit=1000";
    size_t o = strlen(path);
    const char *sep = "&tag=";
    for (int i = 2; i < api_ctl_nargs(c); i++) {
        char *esc = curl_easy_escape(NULL, api_ctl_arg(c, i), 0);
        o += (size_t)snprintf(path + o, sizeof(path) - o, "%s%s", sep, esc);
        curl_free(esc);
        sep = ",";
        if (o >= sizeof(path))
            return usage("too many filters");
    }
    char *raw = NULL;
    if (call(c, "GET", path, NULL, NULL, 0, &raw) != 0)
        return 1;
    json_error_t je;
    json_t *r = json_loads(raw, 0, &je);
    free(raw);
    if (api_ctl_json(c)) {
        json_dumpf(r, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
    } else {
        size_t i;
        json_t *d;
        printf("%-32s %-8s %-20s %s\n", "ID", "DISABLED", "CREDENTIALS", "TAGS");
        json_array_foreach(json_object_get(r, "data"), i, d)
        {
            char *cr = json_dumps(json_object_get(d, "credentials"), JSON_COMPACT);
            char *tg = json_dumps(json_object_get(d, "tags"), JSON_COMPACT);
            printf("%-32s %-8s %-20s %s\n", json_string_value(json_object_get(d, "id")),
                   json_is_true(json_object_get(d, "disabled")) ? "yes" : "no", cr ? cr : "",
                   tg ? tg : "");
            free(cr);
            free(tg);
        }
        printf("(%" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT ")\n",
               json_integer_value(json_object_get(r, "count")),
               json_integer_value(json_object_get(r, "total")));
    }
    json_decref(r);
    return 0;
}

static int cmd_create(ctl_t *c)
{
    json_t *b = json_pack("{s:s,s:{}}", "id", api_ctl_arg(c, 2), "tags");
    if (b == NULL)
        return usage("the id is not valid UTF-8");
    for (int i = 3; i < api_ctl_nargs(c); i++) {
        const char *a = api_ctl_arg(c, i);
        const char *eq = strchr(a, '=');
        if (eq == NULL || eq == a) {
            json_decref(b);
            return usage("create takes KEY=VALUE arguments");
        }
        size_t kl = (size_t)(eq - a);
        char *k = an_strndup(a, kl);
        if (strcmp(k, "password") == 0 || strcmp(k, "token") == 0)
            json_object_set_new(b, k, json_string(eq + 1));
        else if (strcmp(k, "cert") == 0)
            json_object_set_new(b, "cert_fingerprint", json_string(eq + 1));
        else
            json_object_set_new(json_object_get(b, "tags"), k, json_string(eq + 1));
        free(k);
    }
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    char *raw = NULL;
    int rc = call(c, "POST", "/api/v1/devices", NULL, body, strlen(body), &raw);
    free(body);
    if (rc == 0)
        print_device(c, raw);
    free(raw);
    return rc;
}

static int cmd_import(ctl_t *c)
{
    const char *file = api_ctl_arg(c, 2);
    FILE *f = fopen(file, "rb");
    if (f == NULL) {
        fprintf(stderr, "antenna ctl: devices import: cannot open %s\n", file);
        return 1;
    }
    struct {
        char *p;
        size_t len;
    } t = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        t.p = an_realloc(t.p, t.len + n + 1);
        memcpy(t.p + t.len, buf, n);
        t.len += n;
    }
    fclose(f);
    char *raw = NULL;
    /* the type by the file's first byte, as the server would sniff it */
    const char *ctype = "text/csv";
    for (size_t i = 0; i < t.len; i++)
        if (t.p[i] != ' ' && t.p[i] != '\t' && t.p[i] != '\r' && t.p[i] != '\n') {
            ctype = t.p[i] == '{' ? "application/x-ndjson" : "text/csv";
            break;
        }
    int rc = call(c, "POST", "/api/v1/devices/import", ctype, t.p ? t.p : "", t.len, &raw);
    free(t.p);
    if (rc == 0 && raw)
        printf("%s\n", raw);
    free(raw);
    return rc;
}

/* shadow ID: the shadow; shadow ID JSON: a merge of JSON (an object,
 * null deletes a key) into the desired state. */
static int cmd_shadow(ctl_t *c, const char *id)
{
    if (api_ctl_nargs(c) > 4)
        return usage("shadow takes an id and at most one JSON object");
    char *body = NULL, *raw = NULL;
    if (api_ctl_nargs(c) == 4) {
        json_error_t je;
        json_t *st = json_loads(api_ctl_arg(c, 3), 0, &je);
        if (!json_is_object(st)) {
            json_decref(st);
            return usage("the desired state is a JSON object: '{\"led\": \"on\"}'");
        }
        json_t *b = json_pack("{s:o}", "state", st);
        body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
    }
    char *path = dev_path(id, body ? "shadow/desired" : "shadow");
    int rc = call(c, body ? "PATCH" : "GET", path, body ? "application/json" : NULL, body,
                  body ? strlen(body) : 0, &raw);
    if (rc == 0)
        print_device(c, raw);
    free(raw);
    free(body);
    free(path);
    return rc;
}

int api_ctl_devices(ctl_t *c)
{
    int n = api_ctl_nargs(c);
    const char *sub = n > 1 ? api_ctl_arg(c, 1) : "list";
    const char *id = n > 2 ? api_ctl_arg(c, 2) : NULL;
    char *raw = NULL;
    int rc;
    if (strcmp(sub, "list") == 0)
        return cmd_list(c);
    if (strcmp(sub, "export") == 0) {
        const char *fmt = id ? id : "jsonl";
        if (strcmp(fmt, "csv") != 0 && strcmp(fmt, "jsonl") != 0)
            return usage("export takes csv or jsonl");
        char path[64];
        snprintf(path, sizeof(path), "/api/v1/devices/export?format=%s", fmt);
        rc = call(c, "GET", path, NULL, NULL, 0, &raw);
        if (rc == 0 && raw)
            fputs(raw, stdout);
        free(raw);
        return rc;
    }
    if (id == NULL)
        return usage("this command takes an argument");
    if (strcmp(sub, "import") == 0)
        return cmd_import(c);
    if (strcmp(sub, "create") == 0)
        return cmd_create(c);
    if (strcmp(sub, "shadow") == 0)
        return cmd_shadow(c, id);
    if (n > 3)
        return usage("too many arguments");
    char *path;
    if (strcmp(sub, "show") == 0) {
        path = dev_path(id, NULL);
        rc = call(c, "GET", path, NULL, NULL, 0, &raw);
        if (rc == 0)
            print_device(c, raw);
    } else if (strcmp(sub, "delete") == 0) {
        path = dev_path(id, NULL);
        rc = call(c, "DELETE", path, NULL, NULL, 0, &raw);
        if (rc == 0)
            printf("deleted %s\n", id);
    } else if (strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0) {
        path = dev_path(id, sub);
        rc = call(c, "POST", path, NULL, "", 0, &raw);
        if (rc == 0)
            printf("%sd %s\n", sub, id);
    } else {
        return usage("unknown subcommand");
    }
    free(path);
    free(raw);
    return rc;
}
