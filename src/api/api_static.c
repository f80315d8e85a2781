/* api_static.c -- look up the dashboard's embedded files (api_static.h).
 *
 * The table itself, api_static_files[], is generated at build time from
 * web/ by cmake/embed_web.cmake (api_static_data.c in the build tree).  It
 * holds a handful of rows, so a linear scan is the whole index; it is
 * static const and safe from any thread.
 */
#include <string.h>

#include "api_static.h"

extern const api_static_file_t api_static_files[]; /* generated, {NULL}-ended */

const api_static_file_t *api_static_find(const char *path)
{
    if (!path)
        return NULL;
    for (const api_static_file_t *f = api_static_files; f->path; f++)
        if (strcmp(f->path, path) == 0)
            return f;
    return NULL;
}
