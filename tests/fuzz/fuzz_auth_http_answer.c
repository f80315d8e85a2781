/* fuzz_auth_http_answer.c -- libFuzzer: auth_http_parse_answer() on
 * arbitrary webhook bodies, for both formats and a few status codes, and
 * the ACL rule text of an allow through auth_acl_from_lines().  Checks the
 * contract: an error has a reason; a verdict is ALLOW, DENY or PASS, PASS
 * only in the json format and only for a 2xx; rules only with an allow. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth_acl.h"
#include "auth_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {200, 204, 403, 500};
    for (uint8_t format = CONF_AUTH_FORMAT_JSON; format <= CONF_AUTH_FORMAT_OPA; format++) {
        for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
            auth_verdict_t v = AUTH_PENDING;
            char *acl_text = NULL;
            const char *why = NULL;
            int rc = auth_http_parse_answer(format, statuses[i], (const char *)data, size, &v,
                                            &acl_text, &why);
            if (rc < 0) {
                if (why == NULL || acl_text != NULL)
                    abort();
                continue;
            }
            if (v != AUTH_ALLOW && v != AUTH_DENY && v != AUTH_PASS)
                abort();
            if (v == AUTH_PASS && (format != CONF_AUTH_FORMAT_JSON || statuses[i] >= 300))
                abort();
            if (acl_text) {
                if (v != AUTH_ALLOW)
                    abort();
                char err[200];
                auth_acl_t *acl = auth_acl_from_lines(acl_text, "fuzz", err, sizeof(err));
                auth_acl_free(acl);
                free(acl_text);
            }
        }
    }
    return 0;
}
