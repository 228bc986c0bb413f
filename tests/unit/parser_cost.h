/*
 * parser_cost.h - "is this parser linear?" for the parser-cost unit tests
 * (test_checks_parser_cost.c, test_frontends_parser_cost.c,
 * test_core_parser_cost.c; issue 13, defect 5).
 *
 * A case is a parser entry point (pc_fn) and a generator of one hostile
 * input shape (pc_gen) at any size.  pc_check() measures the parser's CPU
 * time per call on a ladder of sizes, smallest first (by default 1 KiB,
 * 16 KiB, 256 KiB, 1 MiB), and asserts that at every rung
 *
 *     cost(size) / cost(smallest)  <  PC_SLACK * size / smallest
 *
 * A linear parser stays near size/smallest (fixed costs make it less); a
 * quadratic one grows with its square: 16x the input is 256x the work, past
 * the bound of 8 * 16 = 128, so it fails on the second rung, before a 1 MiB
 * input could take minutes.  Big inputs also cost what no small one does:
 * fresh pages from the kernel, cache misses.  So each rung is also allowed
 * PC_REF_SLACK times the cost of allocating, touching and freeing PC_REF_COPIES
 * buffers of its size (pc_ref): linear work on copies of the input, which a
 * quadratic parser overruns by orders of magnitude all the same.  No wall-clock threshold: the clock is
 * CLOCK_PROCESS_CPUTIME_ID, each figure is the best of PC_TRIALS trials of
 * enough calls to last PC_TRIAL_NS, and both sides of a ratio slow down
 * alike under ASan/TSan or a busy machine.
 *
 * Each rung prints one line (case, size, ns per call, ratio, bound), so a
 * failure says which shape and size broke the bound.
 */
#ifndef MW_PARSER_COST_H
#define MW_PARSER_COST_H

#include <stdio.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mwtest.h"

/* ThreadSanitizer slows memory accesses by a factor that grows with the
 * working set, so CPU ratios there say nothing about a parser's complexity
 * (a linear parser measured 781x on a 62x input).  These tests are single
 * threaded: under TSan they only say so and pass; the normal and ASan
 * builds make the assertions. */
#if defined(__SANITIZE_THREAD__)
#define PC_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PC_UNDER_TSAN 1
#endif
#endif
#ifdef PC_UNDER_TSAN
#define PC_SKIP_UNDER_TSAN()                                                                           \
    do {                                                                                               \
        printf("parser cost: not measured under ThreadSanitizer (ratios meaningless there); "          \
               "the normal and ASan builds check it\n0 passed, 0 failed\n");                            \
        return 0;                                                                                      \
    } while (0)
#else
#define PC_SKIP_UNDER_TSAN() ((void)0)
#endif

#define PC_SLACK 8.0
#define PC_TRIALS 5
#define PC_TRIAL_NS 3000000.0    /* 3 ms of CPU per trial */
#define PC_KIB ((size_t)1024)
#define PC_MIB ((size_t)1024 * 1024)

/* Parse in[0..len) once (in is NUL-terminated at len); arg is the case's. */
typedef void (*pc_fn)(const char *in, size_t len, void *arg);
/* Write an input of about n bytes (never more) into out; return its length. */
typedef size_t (*pc_gen)(char *out, size_t n);

static inline double pc_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Best-of-PC_TRIALS CPU nanoseconds per call of fn on in[0..len). */
static inline double pc_cost(pc_fn fn, void *arg, const char *in, size_t len)
{
    unsigned reps = 1;
    double best = 0;
    for (;;) {   /* calibrate: enough calls for one trial to last PC_TRIAL_NS */
        double t0 = pc_cpu_ns();
        for (unsigned r = 0; r < reps; r++)
            fn(in, len, arg);
        double t = pc_cpu_ns() - t0;
        best = t / reps;
        if (t >= PC_TRIAL_NS || reps >= (1u << 20))
            break;
        double next = t <= 0 ? reps * 16.0 : reps * (PC_TRIAL_NS * 1.2 / t) + 1;
        reps = next > (double)(1u << 20) ? 1u << 20 : (unsigned)next;
    }
    for (int k = 1; k < PC_TRIALS; k++) {
        double t0 = pc_cpu_ns();
        for (unsigned r = 0; r < reps; r++)
            fn(in, len, arg);
        double t = (pc_cpu_ns() - t0) / reps;
        if (t < best)
            best = t;
    }
    return best > 1 ? best : 1;
}

#define PC_REF_COPIES 4
#define PC_REF_SLACK 2.0

static void pc_ref_fn(const char *in, size_t len, void *arg)
{
    (void)in, (void)arg;
    char *p[PC_REF_COPIES];
    for (int i = 0; i < PC_REF_COPIES; i++) {
        p[i] = malloc(len + 1);
        memset(p[i], i + 1, len + 1);
    }
    for (int i = 0; i < PC_REF_COPIES; i++) {
        __asm__ volatile("" : : "r"(p[i]) : "memory");   /* keep the stores */
        free(p[i]);
    }
}

/* Sizes: 0-terminated ladder, smallest first; NULL for the default. */
static inline bool pc_check_sizes(const char *name, pc_fn fn, void *arg, pc_gen gen,
                                  const size_t *sizes)
{
    static const size_t def[] = {PC_KIB, 16 * PC_KIB, 256 * PC_KIB, PC_MIB, 0};
    if (sizes == NULL)
        sizes = def;
    size_t maxn = 0;
    for (size_t i = 0; sizes[i]; i++)
        maxn = sizes[i] > maxn ? sizes[i] : maxn;
    char *buf = malloc(maxn + 1);
    if (!MW_TEST_ASSERT(buf != NULL))
        return false;
    bool ok = true;
    double base = 0;
    size_t base_len = 0;
    for (size_t i = 0; sizes[i] && ok; i++) {
        size_t len = gen(buf, sizes[i]);
        buf[len] = '\0';
        double c = pc_cost(fn, arg, buf, len);
        if (i == 0) {
            base = c;
            base_len = len ? len : 1;
            fprintf(stderr, "  %-34s %8zu bytes %12.0f ns/call\n", name, len, c);
            continue;
        }
        double ratio = c / base, bound = PC_SLACK * (double)len / (double)base_len;
        double ref = pc_cost(pc_ref_fn, NULL, buf, len);
        bound += PC_REF_SLACK * ref / base;   /* the allowance for big memory, as a ratio */
        fprintf(stderr, "  %-34s %8zu bytes %12.0f ns/call  ratio %9.1f  bound %8.0f\n", name,
                len, c, ratio, bound);
        ok = ratio < bound;
        if (!ok)
            fprintf(stderr, "FAIL %s: %zu bytes cost %.0fx the %zu-byte input (bound %.0fx): "
                    "not linear\n", name, len, ratio, base_len, bound);
    }
    free(buf);
    return mw_test_count(ok);
}

static inline bool pc_check(const char *name, pc_fn fn, void *arg, pc_gen gen)
{
    return pc_check_sizes(name, fn, arg, gen, NULL);
}

/* Generator helpers: repeat unit (ulen bytes) between head and tail. */
static inline size_t pc_fill(char *out, size_t n, const char *head, const char *unit,
                             const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail), o = 0;
    if (hl + tl > n)
        return 0;
    memcpy(out, head, hl);
    o = hl;
    while (o + ul + tl <= n) {
        memcpy(out + o, unit, ul);
        o += ul;
    }
    memcpy(out + o, tail, tl);
    return o + tl;
}

#endif
