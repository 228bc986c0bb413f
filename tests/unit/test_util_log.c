/*
 * test_util_log.c - log.c: the journal target ("<N>" priorities, no own
 * timestamp or pid), JSON lines (a "ts", counts as numbers, queue ids as
 * strings), log.target = auto resolution ($JOURNAL_STREAM), and the copy of
 * warnings to stderr while a daemon starts.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mwtest.h"

/* Run fn with stderr redirected to a temporary file; its contents (malloc'd). */
static char *capture(void (*fn)(void))
{
    char path[] = "/tmp/mw-test-log.XXXXXX";
    int fd = mkstemp(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *out = calloc(1, 65536);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, 65535);
    (void)n;
    close(fd);
    unlink(path);
    return out;
}

static void log_some(void)
{
    mw_info("hello %d", 42);
    mw_error("broken");
    mw_log_kv kv[] = {{"id", "12345"}, {"rcpts", "3"}, {"size", "x7"}, {"from", "a@b"}};
    mw_log_fields(MW_LOG_INFO, "message", kv, 4);
}

static void test_journal(void)
{
    mw_log_configure(MW_LOG_TO_JOURNAL, MW_LOG_FMT_TEXT, "mailwarden", NULL, MW_LOG_INFO);
    char *out = capture(log_some);
    MW_TEST_ASSERT(strstr(out, "<6>hello 42\n") == out);   /* nothing before: no time, no pid */
    MW_TEST_ASSERT(strstr(out, "\n<3>broken\n") != NULL);
    MW_TEST_ASSERT(strstr(out, "\n<6>message id=12345 rcpts=3 size=x7 from=a@b\n") != NULL);
    MW_TEST_ASSERT(strstr(out, "mailwarden[") == NULL);
    free(out);
    /* JSON in the journal: no "ts" either */
    mw_log_configure(MW_LOG_TO_JOURNAL, MW_LOG_FMT_JSON, "mailwarden", NULL, MW_LOG_INFO);
    out = capture(log_some);
    MW_TEST_ASSERT(strstr(out, "<6>{\"level\":\"info\",\"msg\":\"hello 42\"}\n") == out);
    free(out);
}

static void test_json(void)
{
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_JSON, "mailwarden", NULL, MW_LOG_INFO);
    char *out = capture(log_some);
    /* {"ts":"2026-12-05T09:00:00.123Z","level":"info","msg":"hello 42"} */
    MW_TEST_ASSERT(strncmp(out, "{\"ts\":\"", 7) == 0);
    MW_TEST_ASSERT(strlen(out) > 31 && out[11] == '-' && out[17] == 'T' && out[30] == 'Z' && out[31] == '"');
    MW_TEST_ASSERT(strstr(out, "\"level\":\"info\",\"msg\":\"hello 42\"}\n") != NULL);
    MW_TEST_ASSERT(strstr(out, "\"level\":\"error\",\"msg\":\"broken\"}\n") != NULL);
    /* a count is a number; the queue id (all digits) and a non-number stay strings */
    MW_TEST_ASSERT(strstr(out, "\"msg\":\"message\",\"id\":\"12345\",\"rcpts\":3,\"size\":\"x7\","
                               "\"from\":\"a@b\"}\n") != NULL);
    free(out);
}

static void test_auto(void)
{
    struct stat st;
    char js[64];

    unsetenv("JOURNAL_STREAM");
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_AUTO, true), MW_LOG_TO_STDERR);
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_AUTO, false), MW_LOG_TO_SYSLOG);
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_STDERR, false), MW_LOG_TO_STDERR);
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_SYSLOG, true), MW_LOG_TO_SYSLOG);
    /* stderr is the journal stream: $JOURNAL_STREAM names its device:inode */
    MW_TEST_ASSERT(fstat(2, &st) == 0);
    snprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", js, 1);
    MW_TEST_ASSERT(mw_log_stderr_is_journal());
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_AUTO, true), MW_LOG_TO_JOURNAL);
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_AUTO, false), MW_LOG_TO_JOURNAL);
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_STDERR, true), MW_LOG_TO_JOURNAL);
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_SYSLOG, true), MW_LOG_TO_SYSLOG);
    /* inherited from a parent whose stderr it was, not ours: not the journal */
    setenv("JOURNAL_STREAM", "1:2", 1);
    MW_TEST_ASSERT(!mw_log_stderr_is_journal());
    MW_TEST_EQ_INT(mw_log_resolve_auto(MW_LOG_TO_AUTO, false), MW_LOG_TO_SYSLOG);
    unsetenv("JOURNAL_STREAM");
}

static void warn_and_info(void)
{
    mw_info("just so");
    mw_warn("careful");
}

static void test_copy_to_stderr(void)
{
    mw_log_configure(MW_LOG_TO_SYSLOG, MW_LOG_FMT_TEXT, "mailwarden-test", "local7", MW_LOG_INFO);
    mw_log_copy_to_stderr(true);
    char *out = capture(warn_and_info);
    MW_TEST_EQ_STR(out, "mailwarden-test: warning: careful\n");
    free(out);
    mw_log_copy_to_stderr(false);
    out = capture(warn_and_info);
    MW_TEST_EQ_STR(out, "");
    free(out);
    mw_log_configure(MW_LOG_TO_STDERR, MW_LOG_FMT_TEXT, "mailwarden", NULL, MW_LOG_INFO);
}

int main(void)
{
    MW_TEST_RUN(test_journal);
    MW_TEST_RUN(test_json);
    MW_TEST_RUN(test_auto);
    MW_TEST_RUN(test_copy_to_stderr);
    return MW_TEST_SUMMARY();
}
