/*
 * mwtest.h - a tiny assertion harness for the unit tests.
 *
 * Usage (one test binary = one .c file that includes this header once):
 *
 *     static void test_parse(void)
 *     {
 *         MW_TEST_ASSERT(parse("x") == 0);
 *         MW_TEST_EQ_STR(result, "expected");
 *     }
 *     int main(void)
 *     {
 *         MW_TEST_RUN(test_parse);
 *         return MW_TEST_SUMMARY();
 *     }
 *
 * A failed check prints file:line and what was compared, counts, and the
 * test goes on (no longjmp: later checks may crash on a NULL the failed one
 * reported; guard with `if (!MW_TEST_ASSERT(p)) return;`, every check
 * returns whether it passed).  MW_TEST_SUMMARY() prints "N passed,
 * N failed" and returns the exit status (0 only if nothing failed).
 * The counters are atomic, so checks may be made from several threads.
 */
#ifndef MW_TEST_H
#define MW_TEST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_uint mw_test_passed;
static atomic_uint mw_test_failed;

static inline bool mw_test_count(bool ok)
{
    atomic_fetch_add(ok ? &mw_test_passed : &mw_test_failed, 1);
    return ok;
}

static inline bool mw_test_result(bool ok, const char *file, int line, const char *what)
{
    if (!ok)
        fprintf(stderr, "FAIL %s:%d: %s\n", file, line, what);
    return mw_test_count(ok);
}

static inline bool mw_test_eq_str(const char *a, const char *b, const char *file, int line,
                                  const char *ea, const char *eb)
{
    bool ok = (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
    if (!ok)
        fprintf(stderr, "FAIL %s:%d: %s == %s: \"%s\" != \"%s\"\n", file, line, ea, eb,
                a ? a : "(null)", b ? b : "(null)");
    return mw_test_count(ok);
}

static inline bool mw_test_eq_int(long long a, long long b, const char *file, int line,
                                  const char *ea, const char *eb)
{
    if (a != b)
        fprintf(stderr, "FAIL %s:%d: %s == %s: %lld != %lld\n", file, line, ea, eb, a, b);
    return mw_test_count(a == b);
}

static inline bool mw_test_eq_mem(const void *a, size_t alen, const void *b, size_t blen,
                                  const char *file, int line, const char *ea, const char *eb)
{
    bool ok = alen == blen && (alen == 0 || (a && b && memcmp(a, b, alen) == 0));
    if (!ok)
        fprintf(stderr, "FAIL %s:%d: %s == %s: %zu vs %zu bytes, contents %s\n", file, line,
                ea, eb, alen, blen, alen == blen ? "differ" : "not compared");
    return mw_test_count(ok);
}

#define MW_TEST_ASSERT(cond) mw_test_result(!!(cond), __FILE__, __LINE__, #cond)
#define MW_TEST_EQ_STR(a, b) mw_test_eq_str((a), (b), __FILE__, __LINE__, #a, #b)
#define MW_TEST_EQ_INT(a, b) mw_test_eq_int((long long)(a), (long long)(b), __FILE__, __LINE__, #a, #b)
#define MW_TEST_EQ_MEM(a, alen, b, blen) \
    mw_test_eq_mem((a), (alen), (b), (blen), __FILE__, __LINE__, #a, #b)

/* Run one test function, announcing it (stderr, so failures interleave right). */
#define MW_TEST_RUN(fn) do { \
        fprintf(stderr, "-- %s\n", #fn); \
        fn(); \
    } while (0)

static inline int mw_test_summary(void)
{
    unsigned p = atomic_load(&mw_test_passed), f = atomic_load(&mw_test_failed);
    printf("%u passed, %u failed\n", p, f);
    fflush(stdout);
    return f ? 1 : 0;
}
#define MW_TEST_SUMMARY() mw_test_summary()

#endif
