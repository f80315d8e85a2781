/* fuzz_rules.c -- the rule statement parser (src/rules/rules_parse.c) and,
 * for what parses, the evaluator over a fixed message: no crash, no leak,
 * an error always has a message and a column within the statement, a plan
 * respects the stack bound it promised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "rules/rules_eval.h"
#include "rules/rules_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > RULES_MAX_SQL)
        return 0;
    char *sql = malloc(size + 1);
    memcpy(sql, data, size);
    sql[size] = '\0';
    rules_err_t e;
    rules_plan_t *p = rules_parse(sql, &e);
    if (p == NULL) {
        CHECK(e.msg[0] != '\0');
        CHECK(e.column <= strlen(sql) + 1);
    } else {
        CHECK(p->max_stack <= RULES_MAX_STACK);
        static const char payload[] = "{\"a\":{\"b\":[1,2.5,\"x\"]},\"t\":30}";
        rules_input_t in = {.clientid = "c",
                            .topic = "a/b/c",
                            .topic_len = 5,
                            .payload = payload,
                            .payload_len = sizeof(payload) - 1,
                            .qos = 1};
        rules_scratch_t sc;
        rules_scratch_init(&sc, 64 * 1024);
        if (rules_eval_where(p, &in, &sc) >= 0) {
            json_t *row = rules_eval_row(p, &in, &sc);
            json_decref(row);
        }
        rules_scratch_free(&sc);
        rules_input_done(&in);
        rules_plan_free(p);
    }
    free(sql);
    return 0;
}
