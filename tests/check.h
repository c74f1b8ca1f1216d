/* check.h - assertion macros for the tests: print both values, fail the process.
 *
 * The exit code is the verdict (libuv's ASSERT_*): a failed check prints where and
 * what, then aborts. Nothing counts failures by hand. */
#ifndef M3_CHECK_H
#define M3_CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK__FAIL(...)                                                        \
    do {                                                                        \
        fprintf(stderr, "%s:%d: check failed: ", __FILE__, __LINE__);           \
        fprintf(stderr, __VA_ARGS__);                                           \
        fprintf(stderr, "\n");                                                  \
        abort();                                                                \
    } while (0)

#define CHECK(cond)                                                             \
    do { if (!(cond)) CHECK__FAIL("%s", #cond); } while (0)
#define CHECK_MSG(cond, ...)                                                    \
    do { if (!(cond)) CHECK__FAIL(__VA_ARGS__); } while (0)
#define CHECK_EQ_INT(a, b)                                                      \
    do { long long a_ = (long long)(a), b_ = (long long)(b);                    \
         if (a_ != b_) CHECK__FAIL("%s == %s (%lld vs %lld)", #a, #b, a_, b_);  \
    } while (0)
#define CHECK_EQ_STR(a, b)                                                      \
    do { const char *a_ = (a), *b_ = (b);                                       \
         if (!a_ || !b_ || strcmp(a_, b_) != 0)                                 \
             CHECK__FAIL("%s == %s (\"%s\" vs \"%s\")", #a, #b,                 \
                         a_ ? a_ : "(null)", b_ ? b_ : "(null)");               \
    } while (0)
/* |a-b| <= atol + rtol*|b| */
#define CHECK_CLOSE(a, b, rtol, atol)                                           \
    do { double a_ = (double)(a), b_ = (double)(b);                             \
         if (!(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_)))                    \
             CHECK__FAIL("%s ~= %s (%.9g vs %.9g, rtol %g atol %g)", #a, #b,    \
                         a_, b_, (double)(rtol), (double)(atol));               \
    } while (0)
#define CHECK_CONTAINS(hay, needle)                                             \
    do { const char *h_ = (hay), *n_ = (needle);                                \
         if (!h_ || !strstr(h_, n_))                                            \
             CHECK__FAIL("\"%s\" contains \"%s\"", h_ ? h_ : "(null)", n_);     \
    } while (0)

#endif
