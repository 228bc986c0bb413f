/*
 * fuzz_milter_proto.c - the milter protocol decoder (frontends/milter_proto.h)
 * on what an MTA (or anyone who reaches the milter socket) sends: a byte
 * stream framed packet by packet, each payload decoded as an MTA command
 * and as a filter reply, in an exact-size heap copy so ASan sees any read
 * past the payload.  Decoded commands are encoded again and must decode to
 * the same fields (round trip).
 */
#include <assert.h>
#include <string.h>

#include "buf.h"
#include "fuzz_common.h"
#include "milter_proto.h"

static void roundtrip(const mw_mp_cmd *m)
{
    mw_buf b = MW_BUF_INIT;
    switch (m->cmd) {
    case 'L':
        mw_mp_put_header(&b, m->str1, m->str2);
        break;
    case 'H':
    case 'U':
        mw_mp_put_str(&b, m->cmd, m->str1);
        break;
    case 'C':
        mw_mp_put_connect(&b, m->host, m->family, m->port, m->addr);
        break;
    case 'B':
    case 'E':
        mw_mp_put_body(&b, m->cmd, m->data, m->len);
        break;
    default:
        return;
    }
    char cmd;
    const uint8_t *p;
    size_t plen, used;
    const char *why = NULL;
    assert(mw_mp_frame((const uint8_t *)b.data, b.len, &cmd, &p, &plen, &used, &why) == 1);
    assert(used == b.len && cmd == m->cmd);
    mw_mp_cmd m2;
    assert(mw_mp_decode(cmd, p, plen, &m2, &why));
    switch (m->cmd) {
    case 'L':
        assert(strcmp(m2.str1, m->str1) == 0 && strcmp(m2.str2, m->str2) == 0);
        break;
    case 'H':
    case 'U':
        assert(strcmp(m2.str1, m->str1) == 0);
        break;
    case 'C':
        assert(strcmp(m2.host, m->host) == 0 && m2.family == m->family && strcmp(m2.addr, m->addr) == 0);
        assert(m->family == 'U' || m2.port == m->port);
        break;
    default:
        assert(m2.len == m->len && (m->len == 0 || memcmp(m2.data, m->data, m->len) == 0));
        break;
    }
    mw_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        char cmd;
        const uint8_t *p;
        size_t plen, used;
        const char *why = NULL;
        int r = mw_mp_frame(data + off, size - off, &cmd, &p, &plen, &used, &why);
        if (r <= 0) {
            assert(r == 0 || why != NULL);
            break;
        }
        assert(used == plen + 5 && used <= size - off);
        uint8_t *copy = (uint8_t *)fz_exact(p, plen);
        mw_mp_cmd m;
        if (mw_mp_decode(cmd, copy, plen, &m, &why)) {
            if (m.strs) {
                /* walk the packed strings as the server does */
                size_t k = 0;
                for (const char *s = m.strs; s && m.strs_len; s = mw_mp_next(s, m.strs + m.strs_len))
                    k += strlen(s) + 1;
                assert(k == m.strs_len);
            }
            roundtrip(&m);
        } else {
            assert(why != NULL);
        }
        mw_mp_reply rep;
        if (!mw_mp_decode_reply(cmd, copy, plen, &rep, &why))
            assert(why != NULL);
        free(copy);
        off += used;
    }
    /* the reply encoder on hostile text: always one well-formed 'y' packet */
    if (size >= 3) {
        char *text = fz_strndup(data, size);
        mw_buf b = MW_BUF_INIT;
        mw_mp_put_replycode(&b, "550", size & 1 ? "5.7.1" : "", text);
        char cmd;
        const uint8_t *p;
        size_t plen, used;
        const char *why = NULL;
        mw_mp_reply rep;
        assert(mw_mp_frame((const uint8_t *)b.data, b.len, &cmd, &p, &plen, &used, &why) == 1);
        assert(mw_mp_decode_reply(cmd, p, plen, &rep, &why) && strncmp(rep.str1, "550", 3) == 0);
        mw_buf_free(&b);
        free(text);
    }
    return 0;
}
