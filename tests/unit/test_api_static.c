/* test_api_static.c -- the dashboard embedded by cmake/embed_web.cmake:
 * every file of web/ is in the table byte for byte (compared with the file
 * on disk, ANTENNA_SOURCE_DIR), with its content type; "/" is index.html;
 * paths that are not files (a directory, a prefix, "..", a query) are NULL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_static.h"

/* The file's bytes (malloc'd) and length, or NULL. */
static unsigned char *read_file(const char *rel, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/web/%s", ANTENNA_SOURCE_DIR, rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void check_file(const char *url, const char *rel, const char *type_prefix)
{
    const api_static_file_t *f = api_static_find(url);
    assert_non_null(f);
    assert_string_equal(f->path, url);
    assert_true(strncmp(f->content_type, type_prefix, strlen(type_prefix)) == 0);
    size_t len;
    unsigned char *want = read_file(rel, &len);
    assert_non_null(want);
    assert_int_equal(f->len, len);
    assert_memory_equal(f->data, want, len);
    free(want);
}

static void test_files_match_web_dir(void **state)
{
    (void)state;
    check_file("/", "index.html", "text/html");
    check_file("/index.html", "index.html", "text/html");
    check_file("/static/app.js", "static/app.js", "text/javascript");
    check_file("/static/chart.js", "static/chart.js", "text/javascript");
    check_file("/static/devices.js", "static/devices.js", "text/javascript");
    check_file("/static/style.css", "static/style.css", "text/css");
    assert_ptr_equal(api_static_find("/")->data, api_static_find("/index.html")->data);
}

static void test_unknown_paths(void **state)
{
    (void)state;
    const char *bad[] = {"",
                         "/static",
                         "/static/",
                         "/static/app",
                         "/static/app.js?x=1",
                         "/static/../index.html",
                         "static/app.js",
                         "/STATIC/app.js",
                         "/api/v1/info",
                         "//",
                         "/index.htm"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(api_static_find(bad[i]));
    assert_null(api_static_find(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_files_match_web_dir),
        cmocka_unit_test(test_unknown_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
