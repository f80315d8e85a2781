/* fuzz_proxy.c -- libFuzzer: proxy_parse() on arbitrary bytes, for each
 * expected version (0 = either, 1, 2).  Checks the parser's contract: a
 * header length never exceeds the input or PROXY_MAX_HEADER (107 for v1),
 * the answer for a prefix of an accepted header is "need more", and the
 * same header followed by extra bytes parses to the same length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net_proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int version = 0; version <= 2; version++) {
        proxy_result_t r;
        const char *why = NULL;
        int rc = proxy_parse(data, size, version, &r, &why);
        if (rc < 0) {
            if (why == NULL)
                abort();
            continue;
        }
        if (rc == 0)
            continue;
        if ((size_t)rc > size || rc > PROXY_MAX_HEADER || (r.version == 1 && rc > PROXY_V1_MAX))
            abort();
        if (!r.local && r.family == 0)
            abort();
        proxy_result_t r2;
        if (proxy_parse(data, (size_t)rc - 1, version, &r2, &why) != 0)
            abort();
        if (proxy_parse(data, (size_t)rc, version, &r2, &why) != rc ||
            memcmp(&r, &r2, sizeof(r)) != 0)
            abort();
    }
    return 0;
}
