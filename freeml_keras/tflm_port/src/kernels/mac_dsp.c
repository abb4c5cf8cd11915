/* The Cortex-M4's fast paths of the int8 kernels (fm_mac_dsp.h): SXTB16 / SXTAB16 unpack four
 * int8 values into two pairs of 16-bit halves, SMLAD multiplies and adds two pairs, SMLABB /
 * SMLATT one; each unpacked word feeds two or four accumulators. Empty on other targets. */
#include <string.h>

#include "freeml/fm_mac_dsp.h"
#include "freeml/fm_math.h"

#if FM_MAC_DSP
#include <arm_acle.h>

/* Odd bytes (ROR #8 folded into the instruction: gcc 12 does not fold a separate rotation). */
static inline int16x2_t odd(uint32_t v)
{
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

static inline int16x2_t odd_add(int16x2_t a, uint32_t v)
{
    int16x2_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

#define EVEN(v) __sxtb16((int8x4_t)(v))

/* 4 bytes at q as one word (an unaligned LDR, which the M4 allows). */
static inline uint32_t ld4(const int8_t *q)
{
    uint32_t v;
    memcpy(&v, q, 4);
    return v;
}

void fm_conv_pair_dsp(const fm_conv_params *p, const int8_t *filt, const int8_t *x, ptrdiff_t x_next,
                      ptrdiff_t row_step, uint16_t n, uint16_t rows, int8_t *o, ptrdiff_t o_next)
{
    const int32_t window = (int32_t)n * rows, out_c = p->out_c;
    const uint16_t quads = (uint16_t)(n >> 2), tail = (uint16_t)(n & 3u);
    const fm_out_range q = p->out;
    const int8_t *k = filt;
    int32_t oc;
    for (oc = 0; oc < out_c; oc += 2, k += 2 * window) {
        /* filters oc and oc + 1 (oc again, results dropped, for an odd last channel) */
        const ptrdiff_t w_next = oc + 1 < out_c ? window : 0;
        int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
        const int8_t *xr = x, *w = k;
        uint16_t r, i;
        for (r = rows; r > 0; r--, xr += row_step) {
            const int8_t *xa = xr;
            for (i = quads; i > 0; i--, xa += 4, w += 4) {
                /* 16 MACs: 4 loads, 8 unpacks, 8 SMLAD */
                const uint32_t va = ld4(xa), vb = ld4(xa + x_next), ka = ld4(w), kb = ld4(w + w_next);
                const int16x2_t kae = EVEN(ka), kao = odd(ka), kbe = EVEN(kb), kbo = odd(kb);
                int16x2_t t = EVEN(va);
                a00 = __smlad(t, kae, a00);
                a01 = __smlad(t, kbe, a01);
                t = odd(va);
                a00 = __smlad(t, kao, a00);
                a01 = __smlad(t, kbo, a01);
                t = EVEN(vb);
                a10 = __smlad(t, kae, a10);
                a11 = __smlad(t, kbe, a11);
                t = odd(vb);
                a10 = __smlad(t, kao, a10);
                a11 = __smlad(t, kbo, a11);
            }
            for (i = tail; i > 0; i--, xa++, w++) {       /* 16x16 products: SMLABB */
                const int16_t pa = xa[0], pb = xa[x_next], fa = w[0], fb = w[w_next];
                a00 += (int32_t)pa * fa;
                a01 += (int32_t)pa * fb;
                a10 += (int32_t)pb * fa;
                a11 += (int32_t)pb * fb;
            }
        }
        /* o_next 0: the same pixel twice, the same value written twice. The parameters are
         * read into locals first: the int8 stores could alias them, forcing reloads. */
        {
            const int32_t m0 = p->mult[oc], m1 = p->mult[oc + (w_next != 0)];
            const int16_t s0 = p->shift[oc], s1 = p->shift[oc + (w_next != 0)];
            const int32_t b0 = p->acc0[oc], b1 = p->acc0[oc + (w_next != 0)];
            o[oc] = fm_requant_s8(FM_WRAP_ADD(a00, b0), &q, s0, m0);
            o[o_next + oc] = fm_requant_s8(FM_WRAP_ADD(a10, b0), &q, s0, m0);
            if (w_next) {
                o[oc + 1] = fm_requant_s8(FM_WRAP_ADD(a01, b1), &q, s1, m1);
                o[o_next + oc + 1] = fm_requant_s8(FM_WRAP_ADD(a11, b1), &q, s1, m1);
            }
        }
    }
}

void fm_fc_row_dsp(const fm_fc_params *p, const int8_t *x, const int8_t *filt, const int32_t *bias,
                   int32_t oc, int32_t oc_end, int8_t *o)
{
    const int32_t depth = p->depth;
    const fm_out_range q = p->out;     /* locals: the int8 stores could alias p's fields */
    const int16x2_t off2 = (int16x2_t)((uint32_t)(uint16_t)p->in_off * 0x00010001u);
    const uint16_t quads = (uint16_t)(depth >> 2), tail = (uint16_t)(depth & 3);
    for (; oc < oc_end; oc += 4, o += 4) {
        /* four filters at once; the last group's missing ones repeat its first (dropped) */
        const int32_t m = oc_end - oc < 4 ? oc_end - oc : 4;
        const int8_t *w0 = filt + oc * depth;
        const int8_t *w1 = m > 1 ? w0 + depth : w0, *w2 = m > 2 ? w1 + depth : w0, *w3 = m > 3 ? w2 + depth : w0;
        const int8_t *xa = x;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, j;
        uint16_t i;
        for (i = quads; i > 0; i--, xa += 4, w0 += 4, w1 += 4, w2 += 4, w3 += 4) {
            /* 16 MACs: 5 loads, 10 unpacks, 8 SMLAD */
            const uint32_t v = ld4(xa);
            const int16x2_t xe = __sxtab16(off2, (int8x4_t)v), xo = odd_add(off2, v);
            uint32_t kv = ld4(w0);
            a0 = __smlad(xo, odd(kv), __smlad(xe, EVEN(kv), a0));
            kv = ld4(w1);
            a1 = __smlad(xo, odd(kv), __smlad(xe, EVEN(kv), a1));
            kv = ld4(w2);
            a2 = __smlad(xo, odd(kv), __smlad(xe, EVEN(kv), a2));
            kv = ld4(w3);
            a3 = __smlad(xo, odd(kv), __smlad(xe, EVEN(kv), a3));
        }
        for (i = tail; i > 0; i--) {
            const int16_t v = (int16_t)(*xa++ + p->in_off);
            a0 += (int32_t)v * *w0++;
            a1 += (int32_t)v * *w1++;
            a2 += (int32_t)v * *w2++;
            a3 += (int32_t)v * *w3++;
        }
        {
            const int32_t a[4] = {a0, a1, a2, a3};
            for (j = 0; j < m; j++)
                o[j] = fm_requant_s8(FM_WRAP_ADD(a[j], bias ? bias[oc + j] : 0), &q, p->shift[oc + j],
                                     p->mult[oc + j]);
        }
    }
}

void fm_dw_pixel_dsp(const fm_conv_params *p, const int8_t *xw, const int8_t *w0, const int32_t *bias,
                     uint16_t rows, uint16_t cols, ptrdiff_t y_step, ptrdiff_t x_step, ptrdiff_t w_row,
                     int32_t c4, int8_t *o)
{
    const int16x2_t off2 = (int16x2_t)((uint32_t)(uint16_t)p->in_off * 0x00010001u);
    const ptrdiff_t w_col = p->out_c;
    const fm_out_range q = p->out;
    int32_t c;
    for (c = 0; c < c4; c += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int8_t *xr = xw + c, *wr = w0 + c;
        uint16_t y, t;
        for (y = rows; y > 0; y--, xr += y_step, wr += w_row) {
            const int8_t *xp = xr, *wp = wr;
            for (t = cols; t > 0; t--, xp += x_step, wp += w_col) {
                /* 4 MACs (channels c .. c + 3): 2 loads, 4 unpacks, 4 16x16 MACs */
                const uint32_t v = ld4(xp), kv = ld4(wp);
                const int16x2_t xe = __sxtab16(off2, (int8x4_t)v), xo = odd_add(off2, v);
                const int16x2_t ke = EVEN(kv), ko = odd(kv);
                a0 = __smlabb(xe, ke, a0);
                a2 = __smlatt(xe, ke, a2);
                a1 = __smlabb(xo, ko, a1);
                a3 = __smlatt(xo, ko, a3);
            }
        }
        if (bias) {
            a0 = FM_WRAP_ADD(a0, bias[c]);
            a1 = FM_WRAP_ADD(a1, bias[c + 1]);
            a2 = FM_WRAP_ADD(a2, bias[c + 2]);
            a3 = FM_WRAP_ADD(a3, bias[c + 3]);
        }
        o[c] = fm_requant_s8(a0, &q, p->shift[c], p->mult[c]);
        o[c + 1] = fm_requant_s8(a1, &q, p->shift[c + 1], p->mult[c + 1]);
        o[c + 2] = fm_requant_s8(a2, &q, p->shift[c + 2], p->mult[c + 2]);
        o[c + 3] = fm_requant_s8(a3, &q, p->shift[c + 3], p->mult[c + 3]);
    }
}
#endif
