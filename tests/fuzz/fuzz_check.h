/* fuzz_check.h -- the fuzz targets' assertion: a property that does not
 * hold prints where and aborts, which libFuzzer reports as a crash with the
 * input that caused it (assert() would vanish in a build with NDEBUG). */
#ifndef ANTENNA_FUZZ_CHECK_H
#define ANTENNA_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
