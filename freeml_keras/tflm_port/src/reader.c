/* A small flatbuffer reader that checks every offset, length and vtable against the buffer
 * before use. Written for this runtime (rather than using flatcc) so that a corrupt model can
 * only produce an error, and so that no generated code or allocation is needed. */
#include <string.h>

#include "freeml/fm_exit.h"
#include "freeml/fm_internal.h"

/* Little-endian loads at any alignment. On a little-endian machine a memcpy into the value (a
 * few byte moves): the shifts of the portable form cost the 16-bit MSP430, which shifts one bit
 * per instruction, about 100 cycles per 32-bit load, and the restart path reads a few dozen. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
uint32_t fm_ld_u32(const uint8_t *p)
{
    uint32_t v;
#if UINTPTR_MAX <= 0xFFFFu
    /* 16-bit targets: two word loads when p is even (flatbuffer fields and records mostly are),
     * the high one moved up a word; a library memcpy call otherwise */
    if (((uintptr_t)p & 1u) == 0u) {
        const uint16_t *w = (const uint16_t *)(const void *)p;
        return (uint32_t)w[0] | ((uint32_t)w[1] << 16);
    }
#endif
    memcpy(&v, p, 4);
    return v;
}

uint16_t fm_ld_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}
#else
uint32_t fm_ld_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

uint16_t fm_ld_u16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}
#endif

float fm_ld_f32(const uint8_t *p)
{
    uint32_t u = fm_ld_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bad(fm_fb *fb, uint32_t pos)
{
    if (!fb->err) {
        fb->err = 1;
        fb->err_pos = pos;
    }
    return 0;
}

/* 1 if [pos, pos + n) lies inside the buffer. */
static int inside(const fm_fb *fb, uint32_t pos, uint32_t n)
{
    return pos <= fb->len && n <= fb->len - pos;
}

uint32_t fb_root(fm_fb *fb)
{
    uint32_t root;
    if (fb->len < 8) return bad(fb, 0);
    root = fm_ld_u32(fb->buf);
    if (root < 8 || !inside(fb, root, 4)) return bad(fb, 0);
    return root;
}

uint32_t fb_field(fm_fb *fb, uint32_t table, uint16_t id, uint32_t size)
{
    int32_t soff;
    uint32_t vt, vt_size, tbl_size, off;
    if (fb->err || table == 0) return 0;
    if (!inside(fb, table, 4)) return bad(fb, table);
    soff = (int32_t)fm_ld_u32(fb->buf + table);
    /* vtable = table - soff, computed without overflow */
    if (soff > 0) {
        if ((uint32_t)soff > table) return bad(fb, table);
        vt = table - (uint32_t)soff;
    } else {
        uint32_t d = (uint32_t)0 - (uint32_t)soff;
        if (d > fb->len - table) return bad(fb, table);
        vt = table + d;
    }
    if (!inside(fb, vt, 4)) return bad(fb, table);
    vt_size = fm_ld_u16(fb->buf + vt);
    tbl_size = fm_ld_u16(fb->buf + vt + 2);
    if (vt_size < 4 || (vt_size & 1u) || !inside(fb, vt, vt_size)) return bad(fb, vt);
    if (tbl_size < 4 || !inside(fb, table, tbl_size)) return bad(fb, table);
    if (4u + 2u * (uint32_t)id + 2u > vt_size) return 0;
    off = fm_ld_u16(fb->buf + vt + 4 + 2u * id);
    if (off == 0) return 0;
    if (off < 4 || off + size > tbl_size) return bad(fb, table);
    return table + off;
}

int32_t fb_i32(fm_fb *fb, uint32_t table, uint16_t id, int32_t def)
{
    uint32_t p = fb_field(fb, table, id, 4);
    return p ? (int32_t)fm_ld_u32(fb->buf + p) : def;
}

uint32_t fb_u32(fm_fb *fb, uint32_t table, uint16_t id, uint32_t def)
{
    uint32_t p = fb_field(fb, table, id, 4);
    return p ? fm_ld_u32(fb->buf + p) : def;
}

int32_t fb_i8(fm_fb *fb, uint32_t table, uint16_t id, int32_t def)
{
    uint32_t p = fb_field(fb, table, id, 1);
    return p ? (int32_t)(int8_t)fb->buf[p] : def;
}

uint32_t fb_u8(fm_fb *fb, uint32_t table, uint16_t id, uint32_t def)
{
    uint32_t p = fb_field(fb, table, id, 1);
    return p ? (uint32_t)fb->buf[p] : def;
}

float fb_f32(fm_fb *fb, uint32_t table, uint16_t id, float def)
{
    uint32_t p = fb_field(fb, table, id, 4);
    return p ? fm_ld_f32(fb->buf + p) : def;
}

int32_t fb_u64_nonzero(fm_fb *fb, uint32_t table, uint16_t id)
{
    uint32_t p = fb_field(fb, table, id, 8);
    return p ? (fm_ld_u32(fb->buf + p) | fm_ld_u32(fb->buf + p + 4)) != 0 : 0;
}

/* Follow the uoffset stored at pos. */
static uint32_t deref(fm_fb *fb, uint32_t pos)
{
    uint32_t off;
    if (fb->err || !inside(fb, pos, 4)) return bad(fb, pos);
    off = fm_ld_u32(fb->buf + pos);
    if (off == 0 || off > fb->len - pos) return bad(fb, pos);
    if (!inside(fb, pos + off, 4)) return bad(fb, pos);
    return pos + off;
}

uint32_t fb_table(fm_fb *fb, uint32_t table, uint16_t id)
{
    uint32_t p = fb_field(fb, table, id, 4);
    return p ? deref(fb, p) : 0;
}

uint32_t fb_vector(fm_fb *fb, uint32_t table, uint16_t id, uint32_t elem_size, uint32_t *count)
{
    uint32_t p = fb_field(fb, table, id, 4), v, n;
    *count = 0;
    if (!p) return 0;
    v = deref(fb, p);
    if (!v) return 0;
    n = fm_ld_u32(fb->buf + v);
    if (elem_size && n > (fb->len - v - 4) / elem_size) return bad(fb, v);
    *count = n;
    return v + 4;
}

uint32_t fb_vec_table(fm_fb *fb, uint32_t vec, uint32_t i)
{
    return deref(fb, vec + 4u * i);
}

int32_t fb_vec_i32(const fm_fb *fb, uint32_t vec, uint32_t i)
{
    return (int32_t)fm_ld_u32(fb->buf + vec + 4u * i);
}

/* Model field ids of the metadata lookup (TFLite schema: Model.buffers 4, Model.metadata 6;
 * Metadata.name 0, .buffer 1; Buffer.data 0). */
enum { MD_MODEL_BUFFERS = 4, MD_MODEL_METADATA = 6, MD_NAME = 0, MD_BUFFER = 1, MD_BUF_DATA = 0 };

uint32_t fb_metadata(const uint8_t *model, uint32_t len, const char *name, uint32_t name_len,
                     uint32_t *data_len)
{
    fm_fb fb;
    uint32_t root, mds, n, buffers, nbuf, i;
    fb.buf = model;
    fb.len = len;
    fb.err = 0;
    fb.err_pos = 0;
    *data_len = 0;
    root = fb_root(&fb);
    mds = fb_vector(&fb, root, MD_MODEL_METADATA, 4, &n);
    buffers = fb_vector(&fb, root, MD_MODEL_BUFFERS, 4, &nbuf);
    if (fb.err) return 0;
    for (i = 0; i < n; i++) {
        uint32_t m = fb_vec_table(&fb, mds, i), nl, at, b, bt, data;
        at = fb_vector(&fb, m, MD_NAME, 1, &nl);
        if (fb.err) return 0;
        if (nl != name_len || memcmp(model + at, name, name_len) != 0) continue;
        b = fb_u32(&fb, m, MD_BUFFER, 0);
        if (fb.err || b >= nbuf) return 0;
        bt = fb_vec_table(&fb, buffers, b);
        data = fb_vector(&fb, bt, MD_BUF_DATA, 1, data_len);
        if (fb.err) {
            *data_len = 0;
            return 0;
        }
        return data;
    }
    return 0;
}

const uint8_t *fm_freeml_metadata(const uint8_t *model, uint32_t len, uint32_t *n, uint32_t *stride)
{
    const uint32_t at = fb_metadata(model, len, "freeml", 6u, n);
    const uint8_t *md = model + at;
    uint32_t version, ops_at, s;
    *stride = 0;
    if (at == 0u || *n < 8u || memcmp(md, "FMLM", 4) != 0) return NULL;
    version = fm_ld_u16(md + 4);
    if (version != 1u && version != 2u) return NULL;
    if (*n < 32u) return md;
    ops_at = fm_ld_u32(md + 20);
    s = version == 1u ? FM_MD_OP_RECORD_V1 : FM_MD_OP_RECORD_V2;
    /* s * count is at most 65535 * 20: no overflow; offsets are compared by subtraction */
    if (ops_at >= 32u && ops_at <= *n && s * fm_ld_u16(md + 14) <= *n - ops_at)
        *stride = s;
    return md;
}
