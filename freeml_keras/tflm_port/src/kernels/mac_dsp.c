/* The Cortex-M4's fast paths of the int8 kernels (fm_mac_dsp.h): SXTB16 / SXTAB16 unpack four
 * int8 values into two pairs of 16-bit halves, SMLAD multiplies and adds two pairs, SMLABB /
 * SMLATT one; each unpacked word feeds two or four accumulators. Empty on other targets. */
#include <string.h>

#include "freeml/fm_mac_dsp.h"
#include "freeml/fm_math.h"

#if FM_MAC_DSP
#include "fm_dot.h"   /* fm_sxtb16_ror8, fm_sxtab16_ror8 */

#define EVEN(v) __sxtb16((int8x4_t)(v))

/* 4 bytes at q as one word (an unaligned LDR, which the M4 allows). */
static inline uint32_t ld4(const int8_t *q)
{
    uint32_t v;
    memcpy(&v, q, 4);
    return v;
}

/* fm_mul_by_qm(x, m, -r) for 2 <= r <= 31 (shift <= -2: multipliers below 1/4, nearly all of
 * them) and 0 <= m < 2^31, both roundings in one 64-bit sum: TFLite's value is
 * floor((v - [v < 0] + 2^(r-1)) / 2^r) with v = floor((x m + 2^30) / 2^31), and
 * floor(floor(a / 2^31) / 2^r) = floor(a / 2^(31+r)), so it is
 * floor((x m + 2^30 + 2^(r+30) - [x < 0] 2^31) / 2^(31+r)): v < 0 only if x < 0, and where
 * x < 0 but v = 0 the correction leaves the result 0 either way (r >= 1). One SMLAL onto the
 * addend (high word 2^(r-2) - [x < 0], low word 2^30 + [x < 0] 2^31), then the high word
 * shifted right by r - 1. Other shifts: the general form, out of line (rare; code bytes). */
static FM_NOINLINE int32_t rq_general(int32_t x, int32_t mult, int32_t shift)
{
    return fm_mul_by_qm_inline(x, mult, shift);
}

static inline int32_t rq_mul(int32_t x, int32_t mult, int32_t shift)
{
    if (shift <= -2) {
        const int32_t rs = ~shift;
        uint32_t lo = ((uint32_t)x & 0x80000000u) | 0x40000000u;
        int32_t hi = (int32_t)(((uint32_t)1 << rs) >> 1) + (x < 0 ? -1 : 0);
        __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(x), "r"(mult));
        return hi >> rs;
    }
    return rq_general(x, mult, shift);
}

/* fm_requant_s8 on the M4 (prepare keeps shifts in -31 .. 30). */
static inline int8_t rq(int32_t acc, int32_t mult, int32_t shift, const fm_out_range *q)
{
    int32_t v = rq_mul(acc, mult, shift) + q->off;
    if (v < q->min) v = q->min;
    if (v > q->max) v = q->max;
    return (int8_t)v;
}

/* Accumulators requantized at once (int32 each; for two pixels twice as many): a stack block. */
#define FM_RQ_BLOCK 32
/* The requantization of n channels' values, for one output pixel (P 1: acc[i] to o[i]) or two
 * (P 2: acc[2i] to o[i], acc[2i + 1] to o[o_next + i]), the accumulators with their biases:
 * per channel its shift and multiplier loaded once, per value rq_mul's fast form, the output
 * offset, SSAT and (`lo` above -128: an activation's minimum; its maximum 127) the minimum.
 * In assembly (gcc 12 spills in this loop); a channel with a shift above -2 leaves the loop,
 * takes the general form in C and the loop resumes after it. Out of line: the kernels' loops
 * keep their registers. */
#define FM_RQ_HEAD                                                                         \
    "1:\n\t"                                                                               \
    "ldrsb %[sh], [%[s]], #1\n\t"                                                          \
    "ldr %[m], [%[mp]], #4\n\t"                                                            \
    "cmn %[sh], #2\n\t"                                                                    \
    "bgt 2f\n\t"                                                                           \
    "mvn %[sh], %[sh]\n\t"                                                                 \
    "movs %[b], #1\n\t"                                                                    \
    "lsl %[b], %[b], %[sh]\n\t"                                                            \
    "lsr %[b], %[b], #1\n\t"
#define FM_RQ_VALUE(CLAMP, STORE)                                                          \
    "ldr %[x], [%[a]], #4\n\t"                                                             \
    "add %[h], %[b], %[x], asr #31\n\t"                                                    \
    "and %[l], %[x], #0x80000000\n\t"                                                      \
    "orr %[l], %[l], #0x40000000\n\t"                                                      \
    "smlal %[l], %[h], %[x], %[m]\n\t"                                                     \
    "asr %[h], %[h], %[sh]\n\t"                                                            \
    "add %[h], %[h], %[off]\n\t"                                                           \
    "ssat %[h], #8, %[h]\n\t"                                                              \
    CLAMP STORE
#define FM_RQ_MIN "cmp %[h], %[lo]\n\t" "it lt\n\t" "movlt %[h], %[lo]\n\t"
#define FM_RQ_TAIL "subs %[n], %[n], #1\n\t" "bne 1b\n\t" "2:\n\t"
#define FM_RQ_OPS                                                                          \
    : [sh] "=&r"(sh), [m] "=&r"(m), [b] "=&r"(b), [x] "=&r"(x), [h] "=&r"(h), [l] "=&r"(l),  \
      [a] "+r"(acc), [s] "+r"(shift), [mp] "+r"(mult), [o] "+r"(o), [n] "+r"(n)
static FM_NOINLINE void rq_store(int8_t *o, ptrdiff_t o_next, const int32_t *acc, const int32_t *mult,
                                 const int8_t *shift, int32_t n, int32_t P, const fm_out_range *q)
{
    const int32_t lo = q->min, off = q->off;
    if (q->max != 127) {            /* an activation's maximum below 127 (RELU6, RELU_N1_TO_1): in C */
        int32_t i, k;
        for (i = 0; i < n; i++, o++, acc += P)
            for (k = 0; k < P; k++) o[k * o_next] = rq(acc[k], mult[i], shift[i], q);
        return;
    }
    while (n > 0) {
        int32_t sh, m, b, x, h, l, i;
        uint32_t on = (uint32_t)o_next;
        if (P == 1 && lo == -128)
            __asm__ volatile(FM_RQ_HEAD FM_RQ_VALUE("", "strb %[h], [%[o]], #1\n\t") FM_RQ_TAIL
                             FM_RQ_OPS : [off] "r"(off) : "cc", "memory");
        else if (P == 1)
            __asm__ volatile(FM_RQ_HEAD FM_RQ_VALUE(FM_RQ_MIN, "strb %[h], [%[o]], #1\n\t") FM_RQ_TAIL
                             FM_RQ_OPS : [off] "r"(off), [lo] "r"(lo) : "cc", "memory");
        else if (lo == -128)
            __asm__ volatile(FM_RQ_HEAD FM_RQ_VALUE("", "strb %[h], [%[o]]\n\t")
                             FM_RQ_VALUE("", "ldr %[l], %[on]\n\t" "strb %[h], [%[o], %[l]]\n\t"
                                         "add %[o], %[o], #1\n\t") FM_RQ_TAIL
                             FM_RQ_OPS : [off] "r"(off), [on] "m"(on) : "cc", "memory");
        else
            __asm__ volatile(FM_RQ_HEAD FM_RQ_VALUE(FM_RQ_MIN, "strb %[h], [%[o]]\n\t")
                             FM_RQ_VALUE(FM_RQ_MIN, "ldr %[l], %[on]\n\t" "strb %[h], [%[o], %[l]]\n\t"
                                         "add %[o], %[o], #1\n\t") FM_RQ_TAIL
                             FM_RQ_OPS : [off] "r"(off), [lo] "r"(lo), [on] "m"(on) : "cc", "memory");
        if (n == 0) break;
        /* a shift above -2: shift and multiplier already read (sh, m), the values not */
        for (i = 0; i < P; i++) {
            int32_t v = __ssat(rq_general(acc[i], m, sh) + off, 8);
            o[i * o_next] = (int8_t)(v < lo ? lo : v);
        }
        acc += P;
        o++;
        n--;
        (void)b; (void)x; (void)h; (void)l;
    }
}
#undef FM_RQ_HEAD
#undef FM_RQ_VALUE
#undef FM_RQ_MIN
#undef FM_RQ_TAIL
#undef FM_RQ_OPS

/* Windows of at most this many bytes in rows shorter than 4 bytes are copied to one run. */
#define FM_GATHER 64

/* `quads` steps of 4 bytes: acc[2 * p + f] += window p (*xa, *xa + xn) . filter f (*w, *w + wn),
 * 16 MACs in 4 loads, 8 unpacks (SXTB16), 8 SMLAD and the loop's 2 (wn read from the stack: one
 * register short). Advances *xa and *w. In assembly: gcc 12 spills two operands in this loop. */
static inline void quads_2x2(const int8_t **xa, const int8_t **w, ptrdiff_t xn, ptrdiff_t wn, uint32_t quads,
                             int32_t acc[4])
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    const int8_t *x = *xa, *k = *w;
    uint32_t t0, t1, t2, t3, t4, t5;
    __asm__ volatile(
        "1:\n\t"
        "ldr %[t0], %[wn]\n\t"
        "ldr %[t0], [%[k], %[t0]]\n\t"      /* filter b */
        "ldr %[t1], [%[k]], #4\n\t"         /* filter a */
        "sxtb16 %[t2], %[t1]\n\t"
        "sxtb16 %[t1], %[t1], ror #8\n\t"
        "sxtb16 %[t3], %[t0]\n\t"
        "sxtb16 %[t0], %[t0], ror #8\n\t"
        "ldr %[t4], [%[x], %[xn]]\n\t"      /* window b */
        "sxtb16 %[t5], %[t4]\n\t"
        "smlad %[a10], %[t5], %[t2], %[a10]\n\t"
        "smlad %[a11], %[t5], %[t3], %[a11]\n\t"
        "sxtb16 %[t5], %[t4], ror #8\n\t"
        "smlad %[a10], %[t5], %[t1], %[a10]\n\t"
        "smlad %[a11], %[t5], %[t0], %[a11]\n\t"
        "ldr %[t4], [%[x]], #4\n\t"         /* window a */
        "sxtb16 %[t5], %[t4]\n\t"
        "smlad %[a00], %[t5], %[t2], %[a00]\n\t"
        "smlad %[a01], %[t5], %[t3], %[a01]\n\t"
        "sxtb16 %[t5], %[t4], ror #8\n\t"
        "smlad %[a00], %[t5], %[t1], %[a00]\n\t"
        "smlad %[a01], %[t5], %[t0], %[a01]\n\t"
        "subs %[n], %[n], #1\n\t"
        "bne 1b\n\t"
        : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [x] "+r"(x), [k] "+r"(k),
          [n] "+r"(quads), [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4),
          [t5] "=&r"(t5)
        : [xn] "r"(xn), [wn] "m"(wn)
        : "cc");
    acc[0] = a00; acc[1] = a01; acc[2] = a10; acc[3] = a11;
    *xa = x;
    *w = k;
}

void fm_conv_pair_dsp(const fm_conv_params *p, const int8_t *filt, const int8_t *x, ptrdiff_t x_next,
                      ptrdiff_t row_step, uint16_t n, uint16_t rows, int8_t *o, ptrdiff_t o_next)
{
    const int32_t window = (int32_t)n * rows, out_c = p->out_c;
    int8_t buf[2 * FM_GATHER];
    if (rows > 1 && (n & 3u) && window <= FM_GATHER) {
        /* short filter rows (a first convolution's 3 bytes): both windows copied into one run
         * each, so that the products take whole words (2 x window bytes per pixel pair, against
         * 2 x out_c x window MACs) */
        int8_t *d = buf;
        const int8_t *xr = x;
        uint32_t r, i;
        for (r = rows; r > 0; r--, xr += row_step)
            for (i = 0; i < n; i++, d++) {
                d[0] = xr[i];
                d[FM_GATHER] = xr[x_next + i];
                __asm__("" : "+r"(d));  /* not two memcpy calls of n bytes per row (gcc 12 would) */
            }
        x = buf;
        x_next = FM_GATHER;
        n = (uint16_t)window;
        rows = 1;
    }
    {
    const uint16_t quads = (uint16_t)(n >> 2), tail = (uint16_t)(n & 3u);
    const fm_out_range q = p->out;
    const int8_t *k = filt;
    int32_t oc, oc0 = 0, acc_blk[2 * FM_RQ_BLOCK];
    for (oc = 0; oc < out_c; oc += 2, k += 2 * window) {
        /* filters oc and oc + 1 (oc again, results dropped, for an odd last channel) */
        const ptrdiff_t w_next = oc + 1 < out_c ? window : 0;
        int32_t acc[4] = {0, 0, 0, 0};
        const int8_t *xr = x, *w = k;
        uint16_t r, i;
        for (r = rows; r > 0; r--, xr += row_step) {
            const int8_t *xa = xr;
            if (quads) {
                quads_2x2(&xa, &w, x_next, w_next, quads, acc);
            }
            for (i = tail; i > 0; i--, xa++, w++) {       /* 16x16 products: SMLABB */
                const int16_t pa = xa[0], pb = xa[x_next], fa = w[0], fb = w[w_next];
                acc[0] += (int32_t)pa * fa;
                acc[1] += (int32_t)pa * fb;
                acc[2] += (int32_t)pb * fa;
                acc[3] += (int32_t)pb * fb;
            }
        }
        {
            /* per channel its two pixels' values; requantized a block of channels at a time (o_next
             * 0: the same pixel twice, the same value written twice) */
            int32_t *a = acc_blk + 2 * (oc - oc0);
            const int32_t b0 = p->acc0[oc], b1 = w_next ? p->acc0[oc + 1] : 0;
            a[0] = FM_WRAP_ADD(acc[0], b0);
            a[1] = FM_WRAP_ADD(acc[2], b0);
            a[2] = FM_WRAP_ADD(acc[1], b1);
            a[3] = FM_WRAP_ADD(acc[3], b1);
            if (oc + 2 - oc0 >= FM_RQ_BLOCK || oc + 2 >= out_c) {
                const int32_t end = oc + 2 < out_c ? oc + 2 : out_c;
                rq_store(o + oc0, o_next, acc_blk, p->mult + oc0, p->shift + oc0, end - oc0, 2, &q);
                oc0 = end;
            }
        }
    }
    }
}

void fm_fc_row_dsp(const fm_fc_params *p, const int8_t *x, const int8_t *filt, const int32_t *bias,
                   int32_t oc, int32_t oc_end, int8_t *o)
{
    const int32_t depth = p->depth;
    const fm_out_range q = p->out;     /* locals: the int8 stores could alias p's fields */
    const uint32_t off2 = (uint32_t)(uint16_t)p->in_off * 0x00010001u;
    const int32_t *const mult = p->mult;
    const int8_t *const shift = p->shift;
    const uint16_t quads = (uint16_t)(depth >> 2), tail = (uint16_t)(depth & 3);
    const int32_t oc_first = oc;
    int8_t *const o0 = o;
    int32_t oc0 = oc, acc_blk[FM_RQ_BLOCK];
    for (; oc < oc_end; oc += 4, o += 4) {
        /* four filters at once; the last group's missing ones repeat its first (dropped) */
        const int32_t m = oc_end - oc < 4 ? oc_end - oc : 4;
        const int8_t *w0 = filt + oc * depth;
        const int8_t *w1 = m > 1 ? w0 + depth : w0, *w2 = m > 2 ? w1 + depth : w0, *w3 = m > 3 ? w2 + depth : w0;
        const int8_t *xa = x;
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        uint16_t i;
        if (quads) {
            /* 16 MACs: 5 loads, 10 unpacks, 8 SMLAD, the offset pair from the stack and the
             * loop's 2 (in assembly: gcc 12 spills three operands in this loop); a last group
             * of one or two channels takes the two-channel loop */
            uint32_t n = quads, v, xe, kv, ke;
#define FM_FC_HEAD                                                                          \
                "1:\n\t"                                                                   \
                "ldr %[ke], %[o2]\n\t"                                                    \
                "ldr %[v], [%[x]], #4\n\t"                                                \
                "sxtab16 %[xe], %[ke], %[v]\n\t"                                          \
                "sxtab16 %[v], %[ke], %[v], ror #8\n\t"
#define FM_FC_CH(W, A)                                                                      \
                "ldr %[kv], [%[" W "]], #4\n\t"                                          \
                "sxtb16 %[ke], %[kv]\n\t"                                                 \
                "sxtb16 %[kv], %[kv], ror #8\n\t"                                         \
                "smlad %[" A "], %[xe], %[ke], %[" A "]\n\t"                              \
                "smlad %[" A "], %[v], %[kv], %[" A "]\n\t"
#define FM_FC_TAIL "subs %[n], %[n], #1\n\t" "bne 1b\n\t"
            if (m > 2)
                __asm__ volatile(FM_FC_HEAD FM_FC_CH("w0", "a0") FM_FC_CH("w1", "a1") FM_FC_CH("w2", "a2")
                                 FM_FC_CH("w3", "a3") FM_FC_TAIL
                                 : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [x] "+r"(xa),
                                   [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3), [n] "+r"(n),
                                   [v] "=&r"(v), [xe] "=&r"(xe), [kv] "=&r"(kv), [ke] "=&r"(ke)
                                 : [o2] "m"(off2)
                                 : "cc", "memory");
            else
                __asm__ volatile(FM_FC_HEAD FM_FC_CH("w0", "a0") FM_FC_CH("w1", "a1") FM_FC_TAIL
                                 : [a0] "+r"(a0), [a1] "+r"(a1), [x] "+r"(xa), [w0] "+r"(w0), [w1] "+r"(w1),
                                   [n] "+r"(n), [v] "=&r"(v), [xe] "=&r"(xe), [kv] "=&r"(kv), [ke] "=&r"(ke)
                                 : [o2] "m"(off2)
                                 : "cc", "memory");
#undef FM_FC_HEAD
#undef FM_FC_CH
#undef FM_FC_TAIL
        }
        for (i = tail; i > 0; i--) {
            const int16_t v = (int16_t)(*xa++ + p->in_off);
            a0 += (int32_t)v * *w0++;
            a1 += (int32_t)v * *w1++;
            a2 += (int32_t)v * *w2++;
            a3 += (int32_t)v * *w3++;
        }
        if (bias) {
            a0 = FM_WRAP_ADD(a0, bias[oc]);
            a1 = FM_WRAP_ADD(a1, bias[oc + (m > 1)]);
            a2 = FM_WRAP_ADD(a2, bias[oc + (m > 2 ? 2 : 0)]);
            a3 = FM_WRAP_ADD(a3, bias[oc + (m > 3 ? 3 : 0)]);
        }
        {
            int32_t *a = acc_blk + (oc - oc0);
            a[0] = a0; a[1] = a1; a[2] = a2; a[3] = a3;
            if (oc + 4 - oc0 >= FM_RQ_BLOCK || oc + m >= oc_end) {
                rq_store(o0 + (oc0 - oc_first), 0, acc_blk, mult + oc0, shift + oc0, oc + m - oc0, 1, &q);
                oc0 = oc + m;
            }
        }
    }
}

void fm_dw_pixel_dsp(const fm_conv_params *p, const int8_t *xw, const int8_t *w0, const int32_t *bias,
                     uint16_t rows, uint16_t cols, ptrdiff_t y_step, ptrdiff_t x_step, ptrdiff_t w_row,
                     int32_t c_begin, int32_t c_end, int8_t *o)
{
    const int16x2_t off2 = (int16x2_t)((uint32_t)(uint16_t)p->in_off * 0x00010001u);
    const ptrdiff_t w_col = p->out_c;
    const int32_t *const mult = p->mult;
    const int8_t *const shift = p->shift;
    const fm_out_range q = p->out;
    int32_t c, c0 = c_begin, acc_blk[FM_RQ_BLOCK];
    for (c = c_begin; c < c_end; c += 4) {
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        const int8_t *xr = xw + c, *wr = w0 + c;
        uint32_t y, t;
/* 4 MACs (channels c .. c + 3) of the tap at xp, wp: 2 loads, 4 unpacks, 4 16x16 MACs */
#define FM_DW_TAP(xp, wp)                                                                  \
    do {                                                                                   \
        const uint32_t v = ld4(xp), kv = ld4(wp);                                           \
        const int16x2_t xe = __sxtab16(off2, (int8x4_t)v), xo = fm_sxtab16_ror8(off2, v);    \
        const int16x2_t ke = EVEN(kv), ko = fm_sxtb16_ror8(kv);                             \
        a0 = __smlabb(xe, ke, a0);                                                          \
        a2 = __smlatt(xe, ke, a2);                                                          \
        a1 = __smlabb(xo, ko, a1);                                                          \
        a3 = __smlatt(xo, ko, a3);                                                          \
    } while (0)
        if (cols == 3 && x_step == w_col) {
            /* a 3-wide filter's inside rows (input columns and filter taps the same distance
             * apart: one register), in assembly: 30 instructions per 12 MACs (gcc 12 spills
             * the tap offsets in this loop) */
            const ptrdiff_t s2 = 2 * x_step;
            for (y = rows; y > 0; y--, xr += y_step, wr += w_row) {
                uint32_t t0, t1, t2, t3;
                __asm__(
#define FM_DW_TAP_ASM(OFF)                                                                  \
                    "ldr %[t0], [%[x]" OFF "]\n\t"                                          \
                    "ldr %[t1], [%[w]" OFF "]\n\t"                                          \
                    "sxtab16 %[t2], %[o2], %[t0]\n\t"                                      \
                    "sxtab16 %[t0], %[o2], %[t0], ror #8\n\t"                              \
                    "sxtb16 %[t3], %[t1]\n\t"                                              \
                    "sxtb16 %[t1], %[t1], ror #8\n\t"                                      \
                    "smlabb %[a0], %[t2], %[t3], %[a0]\n\t"                                \
                    "smlatt %[a2], %[t2], %[t3], %[a2]\n\t"                                \
                    "smlabb %[a1], %[t0], %[t1], %[a1]\n\t"                                \
                    "smlatt %[a3], %[t0], %[t1], %[a3]\n\t"
                    FM_DW_TAP_ASM("")
                    FM_DW_TAP_ASM(", %[s]")
                    FM_DW_TAP_ASM(", %[s2]")
#undef FM_DW_TAP_ASM
                    : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [t0] "=&r"(t0),
                      [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3)
                    : [x] "r"(xr), [w] "r"(wr), [s] "r"(x_step), [s2] "r"(s2), [o2] "r"(off2)
                    : "memory");
            }
        } else {
            for (y = rows; y > 0; y--, xr += y_step, wr += w_row) {
                const int8_t *xp = xr, *wp = wr;
                for (t = cols; t > 0; t--, xp += x_step, wp += w_col) FM_DW_TAP(xp, wp);
            }
        }
#undef FM_DW_TAP
        if (bias) {
            a0 = FM_WRAP_ADD(a0, bias[c]);
            a1 = FM_WRAP_ADD(a1, bias[c + 1]);
            a2 = FM_WRAP_ADD(a2, bias[c + 2]);
            a3 = FM_WRAP_ADD(a3, bias[c + 3]);
        }
        {
            int32_t *a = acc_blk + (c - c0);
            a[0] = a0; a[1] = a1; a[2] = a2; a[3] = a3;
            if (c + 4 - c0 >= FM_RQ_BLOCK || c + 4 >= c_end) {
                rq_store(o + c0, 0, acc_blk, mult + c0, shift + c0, c + 4 - c0, 1, &q);
                c0 = c + 4;
            }
        }
    }
}

/* n >= 1 values acc[0 ..] of one channel (multiplier mult, shift) requantized to o, o + o_next,
 * ...: the fast form of rq_mul and the clamp in assembly (gcc 12 reloads the channel's
 * constants per value), the general form in C. */
static void rq_channel(int8_t *o, ptrdiff_t o_next, const int32_t *acc, int32_t n, int32_t mult, int32_t shift,
                       const fm_out_range *q)
{
    if (shift <= -2 && q->max == 127) {
        const int32_t sh = ~shift, b = (int32_t)(((uint32_t)1 << sh) >> 1), off = q->off, lo = q->min;
        int32_t x, h, l;
        __asm__ volatile("1:\n\t"
                         "ldr %[x], [%[a]], #4\n\t"
                         "add %[h], %[b], %[x], asr #31\n\t"
                         "and %[l], %[x], #0x80000000\n\t"
                         "orr %[l], %[l], #0x40000000\n\t"
                         "smlal %[l], %[h], %[x], %[m]\n\t"
                         "asr %[h], %[h], %[sh]\n\t"
                         "add %[h], %[h], %[off]\n\t"
                         "ssat %[h], #8, %[h]\n\t"
                         "cmp %[h], %[lo]\n\t"
                         "it lt\n\t"
                         "movlt %[h], %[lo]\n\t"
                         "strb %[h], [%[o]]\n\t"
                         "add %[o], %[o], %[on]\n\t"
                         "subs %[n], %[n], #1\n\t"
                         "bne 1b\n\t"
                         : [x] "=&r"(x), [h] "=&r"(h), [l] "=&r"(l), [a] "+r"(acc), [o] "+r"(o), [n] "+r"(n)
                         : [b] "r"(b), [m] "r"(mult), [sh] "r"(sh), [off] "r"(off), [lo] "r"(lo), [on] "r"(o_next)
                         : "cc", "memory");
        return;
    }
    for (; n > 0; n--, o += o_next) *o = rq(*acc++, mult, shift, q);
}

/* A channel's stored weights at most (FM_CSR_RUN offsets of 2 bytes on the stack). */
#define FM_CSR_RUN 256

int fm_conv_csr_row_dsp_fits(const fm_conv_params *p, const fm_tensor *w, int32_t pw)
{
    const uint8_t *const seg = w->seg;
    const uint32_t segw = w->seg_w, taps = (uint32_t)p->k_h * (uint32_t)p->k_w;
    int32_t oc;
    if (w->idx_w != 1 || p->stride_w != 1 || (int32_t)p->k_c * p->k_h * pw > 0xFFFF - 3) return 0;
    for (oc = 0; oc < p->out_c; oc++) {
        const uint32_t r = (uint32_t)oc * taps;
        const uint32_t n = segw == 1 ? (uint32_t)seg[r + taps] - seg[r]
                         : segw == 2 ? (uint32_t)((const uint16_t *)(const void *)seg)[r + taps] -
                                           ((const uint16_t *)(const void *)seg)[r]
                                     : ((const uint32_t *)(const void *)seg)[r + taps] -
                                           ((const uint32_t *)(const void *)seg)[r];
        if (n > FM_CSR_RUN) return 0;
    }
    return 1;
}

/* CONV_2D with CSR weights (8-bit column indices), stride 1, one output row: the input rows
 * transposed to [input channel][filter row][column] (t, pw columns a row, kh rows a channel,
 * the zero point in the padding; conv_2d.c's eval_sparse) put the input values of 4 adjacent
 * output columns at one tap and input channel into one word. Per output channel its stored
 * weights' offsets in t (tap + index x plane, 2 bytes each) once into a run on the stack; then
 * per group of 4 columns and stored weight: its offset and value (LDRH, LDRSB), the word
 * (LDR), two SXTB16 and four 16x16 MACs (SMLABB / SMLATB, the weight in the bottom half), the
 * loop's 2: 11 instructions per 4 MACs, in assembly. Groups of 4 columns from 0, the last one
 * ending at the row's last column (overlapping the one before: those values computed and
 * written twice, the same); a row of fewer than 4 columns reads padding columns (conv_2d.c's
 * padded width holds 8) and stores its own. fm_conv_csr_row_dsp_fits: the shapes it takes. */
void fm_conv_csr_row_dsp(const fm_conv_params *p, const fm_tensor *w, const int8_t *t, int32_t pw, int8_t *o)
{
    const uint8_t *const idx = w->idx, *const seg = w->seg;
    const int8_t *const v = (const int8_t *)w->cdata;
    const uint32_t segw = w->seg_w;
    const int32_t kh = p->k_h, kw = p->k_w, dw = p->dil_w, ow = p->out_w, out_c = p->out_c;
    const int32_t plane = kh * pw;
    const fm_out_range q = p->out;
    uint16_t run[FM_CSR_RUN];
    int32_t oc;
    uint32_t r = 0;                                             /* CSR row: (oc, ky, kx) */
#define FM_SEG_AT(r) (segw == 1 ? (uint32_t)seg[r] : segw == 2 ? (uint32_t)((const uint16_t *)(const void *)seg)[r] \
                                                   : ((const uint32_t *)(const void *)seg)[r])
    for (oc = 0; oc < out_c; oc++) {
        const uint32_t j0 = FM_SEG_AT(r);
        const int32_t mult = p->mult[oc], shift = p->shift[oc], b = p->acc0[oc];
        uint16_t *re = run;
        int32_t g, ky, kx;
        {   /* the channel's weights' offsets: tap (ky, kx) + index x plane (one loop per
             * segment offset width: no width test per tap) */
            const uint8_t *ip = idx + j0;
            uint16_t tap = 0;
#define FM_RUN(SEG_T)                                                                      \
            do {                                                                           \
                const SEG_T *sp = (const SEG_T *)(const void *)seg + r + 1;                \
                for (ky = kh; ky > 0; ky--, tap = (uint16_t)(tap + pw - kw * dw))          \
                    for (kx = kw; kx > 0; kx--, tap = (uint16_t)(tap + dw)) {              \
                        const uint8_t *const ie = idx + *sp++;                             \
                        while (ip < ie) *re++ = (uint16_t)(tap + *ip++ * plane);           \
                    }                                                                      \
            } while (0)
            if (segw == 1) FM_RUN(uint8_t);
            else if (segw == 2) FM_RUN(uint16_t);
            else FM_RUN(uint32_t);
#undef FM_RUN
            r += (uint32_t)(kh * kw);
        }
        for (g = 0;; g += 4) {
            int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
            if (g + 4 > ow && ow >= 4) g = ow - 4;
            if (re != run) {
                const uint16_t *rp = run;
                const int8_t *vp = v + j0;
                uint32_t xv, wv, ev;
                __asm__("1:\n\t"
                        "ldrh %[x], [%[rp]], #2\n\t"
                        "ldrsb %[w], [%[vp]], #1\n\t"
                        "ldr %[x], [%[tg], %[x]]\n\t"
                        "sxtb16 %[e], %[x]\n\t"
                        "sxtb16 %[x], %[x], ror #8\n\t"
                        "smlabb %[a0], %[e], %[w], %[a0]\n\t"
                        "smlatb %[a2], %[e], %[w], %[a2]\n\t"
                        "smlabb %[a1], %[x], %[w], %[a1]\n\t"
                        "smlatb %[a3], %[x], %[w], %[a3]\n\t"
                        "cmp %[rp], %[re]\n\t"
                        "bne 1b\n\t"
                        : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [rp] "+r"(rp),
                          [vp] "+r"(vp), [x] "=&r"(xv), [w] "=&r"(wv), [e] "=&r"(ev)
                        : [re] "r"(re), [tg] "r"(t + g)
                        : "cc", "memory");
            }
            {
                int32_t acc[4];
                acc[0] = FM_WRAP_ADD(a0, b); acc[1] = FM_WRAP_ADD(a1, b);
                acc[2] = FM_WRAP_ADD(a2, b); acc[3] = FM_WRAP_ADD(a3, b);
                rq_channel(o + g * out_c + oc, out_c, acc, ow < 4 ? ow : 4, mult, shift, &q);
            }
            if (g + 4 >= ow) break;
        }
    }
#undef FM_SEG_AT
}

/* Byte-wise signed maximum / minimum of four int8 lanes: SSUB8 sets a GE flag per byte where
 * a >= b, SEL picks a's byte there and b's elsewhere. */
static inline uint32_t max4(uint32_t a, uint32_t b)
{
    uint32_t r, t;
    __asm__("ssub8 %0, %2, %3\n\tsel %1, %2, %3" : "=&r"(t), "=r"(r) : "r"(a), "r"(b));
    return r;
}

static inline uint32_t min4(uint32_t a, uint32_t b)
{
    uint32_t r, t;
    __asm__("ssub8 %0, %2, %3\n\tsel %1, %3, %2" : "=&r"(t), "=r"(r) : "r"(a), "r"(b));
    return r;
}

void fm_max_pool_pixel_dsp(const int8_t *corner, uint32_t rows, uint32_t cols, ptrdiff_t row_step, int32_t ch,
                           int32_t act_min, int32_t act_max, int8_t *o)
{
    const uint32_t lo = (uint32_t)(uint8_t)act_min * 0x01010101u, hi = (uint32_t)(uint8_t)act_max * 0x01010101u;
    int32_t c;
    for (c = 0; c < ch; c += 4) {
        /* ch not a multiple of 4: the last group is the pixel's last four channels, overlapping
         * the group before (those values computed and written twice, the same) */
        if (c + 4 > ch) c = ch - 4;
        const int8_t *row = corner + c;
        uint32_t m = lo, y, x;      /* the activation's minimum: the maximum starts there */
        if (rows == 2 && cols == 2) {   /* the common 2x2 window: no loops */
            m = max4(m, max4(max4(ld4(row), ld4(row + ch)), max4(ld4(row + row_step), ld4(row + row_step + ch))));
        } else {
            for (y = rows; y > 0; y--, row += row_step) {
                const int8_t *px = row;
                for (x = cols; x > 0; x--, px += ch) m = max4(m, ld4(px));
            }
        }
        m = min4(m, hi);
        memcpy(o + c, &m, 4);
    }
}
#endif
