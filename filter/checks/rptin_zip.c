/*
 * rptin_zip.c - decompression for received DMARC reports: gzip (RFC 1952,
 * one or more members) and a strict zip reader, both over zlib's inflate.
 *
 * Why our own zip reader: libzip is not a dependency and a report zip is
 * the simplest kind there is (one XML entry, deflate or stored).  The
 * reader trusts nothing: it starts from the end-of-central-directory record
 * (a single disk, no comment tricks past 64 KiB), walks the central
 * directory with every offset and length checked against the buffer,
 * checks that each local header agrees with its central entry, refuses
 * encryption, zip64, multi-disk archives and methods other than stored (0)
 * and deflate (8), and checks each entry's size and CRC-32 after inflating.
 *
 * Bombs: every inflate writes into a buffer that may grow only up to the
 * caller's cap (one report, MW_RPTIN_MAX_XML) and the budget for the whole
 * input (MW_RPTIN_MAX_TOTAL).  Reaching a cap is an error that names it;
 * the output is never silently cut.  A declared zip size above the cap is
 * refused before inflating.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "alloc.h"
#include "rptin.h"

/* Inflate in[0..len) with windowBits wb into a buffer of at most max
 * bytes.  gzip: consecutive members are read to the end of the input. */
static bool inflate_capped(const unsigned char *in, size_t len, int wb, bool gzip, size_t max,
                           mw_rptin_budget *b, unsigned char **out, size_t *outlen, size_t *used_in,
                           char *why, size_t whylen)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, wb) != Z_OK) {
        snprintf(why, whylen, "zlib: inflateInit failed");
        return false;
    }
    size_t cap = len * 4 < 65536 ? 65536 : len * 4, n = 0;
    if (cap > max)
        cap = max;
    unsigned char *buf = mw_malloc(cap + 1);
    size_t pos = 0;
    bool ok = false;
    for (;;) {
        size_t in_chunk = len - pos > UINT32_MAX / 2 ? UINT32_MAX / 2 : len - pos;
        z.next_in = (Bytef *)(uintptr_t)(in + pos);
        z.avail_in = (uInt)in_chunk;
        if (n == cap) {
            if (cap >= max) {
                snprintf(why, whylen, "decompressed data larger than the limit of %zu bytes "
                                      "(a compression bomb?): refused", max);
                goto done;
            }
            cap = cap * 2 > max ? max : cap * 2;
            buf = mw_realloc(buf, cap + 1);
        }
        size_t room = cap - n > UINT32_MAX / 2 ? UINT32_MAX / 2 : cap - n;
        z.next_out = buf + n;
        z.avail_out = (uInt)room;
        int rc = inflate(&z, Z_NO_FLUSH);
        size_t produced = room - z.avail_out;
        n += produced;
        pos += in_chunk - z.avail_in;
        b->total += produced;
        if (b->total > MW_RPTIN_MAX_TOTAL) {
            snprintf(why, whylen, "decompressed output of this input passes the limit of %u bytes "
                                  "(a compression bomb?): refused", MW_RPTIN_MAX_TOTAL);
            goto done;
        }
        if (rc == Z_STREAM_END) {
            /* gzip: another member may follow (skip trailing zero padding) */
            size_t p2 = pos;
            while (gzip && p2 < len && in[p2] == 0)
                p2++;
            if (gzip && p2 + 2 <= len && in[p2] == 0x1f && in[p2 + 1] == 0x8b) {
                pos = p2;
                inflateReset(&z);
                continue;
            }
            if (gzip && p2 < len) {
                snprintf(why, whylen, "gzip: %zu bytes of garbage after the data", len - p2);
                goto done;
            }
            ok = true;
            goto done;
        }
        if (rc == Z_BUF_ERROR && z.avail_out != 0) {
            snprintf(why, whylen, "%s: data cut short", gzip ? "gzip" : "zip");
            goto done;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            snprintf(why, whylen, "%s: %s", gzip ? "gzip" : "zip", z.msg ? z.msg : "corrupt data");
            goto done;
        }
        if (produced == 0 && in_chunk - z.avail_in == 0 && z.avail_out != 0) {
            snprintf(why, whylen, "%s: data cut short", gzip ? "gzip" : "zip");
            goto done;
        }
    }
done:
    inflateEnd(&z);
    if (!ok) {
        free(buf);
        return false;
    }
    buf[n] = 0;
    *out = buf;
    *outlen = n;
    if (used_in)
        *used_in = pos;
    return true;
}

bool mw_rptin_gunzip(const unsigned char *in, size_t len, size_t max, mw_rptin_budget *b,
                     unsigned char **out, size_t *outlen, char *why, size_t whylen)
{
    return inflate_capped(in, len, 16 + 15, true, max, b, out, outlen, NULL, why, whylen);
}

static uint16_t le16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define EOCD_SIG 0x06054b50u
#define CEN_SIG  0x02014b50u
#define LOC_SIG  0x04034b50u

bool mw_rptin_unzip(const unsigned char *in, size_t len, size_t max, mw_rptin_budget *b,
                    mw_rptin_zip_cb cb, void *arg, char *why, size_t whylen)
{
    /* the end-of-central-directory record: 22 bytes + a comment < 64 KiB */
    if (len < 22) {
        snprintf(why, whylen, "zip: too short");
        return false;
    }
    size_t eocd = SIZE_MAX;
    size_t lowest = len > 22 + 65535 ? len - 22 - 65535 : 0;
    for (size_t p = len - 22 + 1; p-- > lowest;) {
        if (le32(in + p) == EOCD_SIG && p + 22 + le16(in + p + 20) == len) {
            eocd = p;
            break;
        }
    }
    if (eocd == SIZE_MAX) {
        snprintf(why, whylen, "zip: no end-of-central-directory record");
        return false;
    }
    const unsigned char *e = in + eocd;
    unsigned entries = le16(e + 10);
    uint32_t cdsize = le32(e + 12), cdoff = le32(e + 16);
    if (le16(e + 4) != 0 || le16(e + 6) != 0 || le16(e + 8) != entries) {
        snprintf(why, whylen, "zip: multi-disk archives are not supported");
        return false;
    }
    if (cdoff == 0xffffffffu || cdsize == 0xffffffffu || entries == 0xffff) {
        snprintf(why, whylen, "zip: zip64 archives are not supported");
        return false;
    }
    if ((size_t)cdoff > eocd || (size_t)cdsize > eocd - cdoff) {
        snprintf(why, whylen, "zip: central directory outside the file");
        return false;
    }
    if (entries > MW_RPTIN_MAX_ENTRIES) {
        snprintf(why, whylen, "zip: %u entries, more than the limit of %d", entries, MW_RPTIN_MAX_ENTRIES);
        return false;
    }
    size_t p = cdoff, end = (size_t)cdoff + cdsize;
    for (unsigned i = 0; i < entries; i++) {
        if (end - p < 46 || le32(in + p) != CEN_SIG) {
            snprintf(why, whylen, "zip: central directory entry %u is damaged", i + 1);
            return false;
        }
        const unsigned char *c = in + p;
        unsigned flags = le16(c + 8), method = le16(c + 10);
        uint32_t crc = le32(c + 16), csize = le32(c + 20), usize = le32(c + 24);
        size_t nlen = le16(c + 28), xlen = le16(c + 30), clen = le16(c + 32);
        uint32_t loff = le32(c + 42);
        if (end - p - 46 < nlen + xlen + clen) {
            snprintf(why, whylen, "zip: central directory entry %u is damaged", i + 1);
            return false;
        }
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(nlen > 200 ? 200 : nlen), (const char *)c + 46);
        for (char *q = name; *q; q++)
            if ((unsigned char)*q < 0x20 || (unsigned char)*q == 0x7f)
                *q = '?';
        p += 46 + nlen + xlen + clen;
        if (flags & 0x41) {
            snprintf(why, whylen, "zip entry %s: encrypted: not supported", name);
            return false;
        }
        if (csize == 0xffffffffu || usize == 0xffffffffu || loff == 0xffffffffu) {
            snprintf(why, whylen, "zip entry %s: zip64: not supported", name);
            return false;
        }
        if (nlen > 0 && c[46 + nlen - 1] == '/' && usize == 0)
            continue;   /* a directory */
        if (method != 0 && method != 8) {
            snprintf(why, whylen, "zip entry %s: compression method %u is not supported", name, method);
            return false;
        }
        if (usize > max) {
            snprintf(why, whylen, "zip entry %s: declared size %u bytes is larger than the limit of %zu "
                                  "bytes (a zip bomb?): refused", name, usize, max);
            return false;
        }
        /* the local header must be in the file and agree on the method */
        if ((size_t)loff > cdoff || cdoff - loff < 30 || le32(in + loff) != LOC_SIG ||
            le16(in + loff + 8) != method) {
            snprintf(why, whylen, "zip entry %s: local header missing or disagrees", name);
            return false;
        }
        size_t data = (size_t)loff + 30 + le16(in + loff + 26) + le16(in + loff + 28);
        if (data > cdoff || (size_t)csize > cdoff - data) {
            snprintf(why, whylen, "zip entry %s: data outside the file", name);
            return false;
        }
        unsigned char *out = NULL;
        size_t outlen = 0;
        if (method == 0) {
            if (csize != usize) {
                snprintf(why, whylen, "zip entry %s: stored sizes disagree", name);
                return false;
            }
            b->total += usize;
            if (b->total > MW_RPTIN_MAX_TOTAL) {
                snprintf(why, whylen, "decompressed output of this input passes the limit of %u bytes "
                                      "(a compression bomb?): refused", MW_RPTIN_MAX_TOTAL);
                return false;
            }
            out = mw_malloc((size_t)usize + 1);
            memcpy(out, in + data, usize);
            out[usize] = 0;
            outlen = usize;
        } else {
            char w2[200];
            /* cap at the declared size + 1: a lying header is caught as a mismatch, not inflated on */
            size_t cap = (size_t)usize + 1 > max ? max : (size_t)usize + 1;
            if (!inflate_capped(in + data, csize, -15, false, cap, b, &out, &outlen, NULL, w2, sizeof w2)) {
                if (strstr(w2, "limit") && cap < max)
                    snprintf(w2, sizeof w2, "inflates past its declared size of %u bytes", usize);
                snprintf(why, whylen, "zip entry %s: %s", name, w2);
                return false;
            }
        }
        if (outlen != usize || crc32(0, out, (uInt)outlen) != crc) {
            snprintf(why, whylen, "zip entry %s: size or CRC-32 mismatch (damaged archive)", name);
            free(out);
            return false;
        }
        bool go = cb(name, out, outlen, arg);
        free(out);
        if (!go)
            return true;
    }
    return true;
}
