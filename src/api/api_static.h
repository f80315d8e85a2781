/* api_static.h -- the dashboard's files, embedded in the binary.
 *
 * The web/ directory (HTML, CSS, JS) is turned into C arrays at build time
 * by cmake/embed_web.cmake (a generated api_static_data.c in the build
 * tree), so the API listener serves the dashboard with no file on disk and
 * no CDN.  The table is static const: any thread may read it.
 *
 * Paths served: "/" (index.html), "/index.html" and "/static/NAME" for
 * every file web/static/NAME.  Anything else: NULL (the server answers 404).
 */
#ifndef ANTENNA_API_STATIC_H
#define ANTENNA_API_STATIC_H

#include <stddef.h>

typedef struct {
    const char *path;         /* URL path, e.g. "/static/app.js" */
    const char *content_type; /* e.g. "text/javascript; charset=utf-8" */
    const unsigned char *data;
    size_t len;
} api_static_file_t;

/* The embedded file for a URL path (query string already stripped), or
 * NULL.  "/" maps to index.html. */
const api_static_file_t *api_static_find(const char *path);

#endif
