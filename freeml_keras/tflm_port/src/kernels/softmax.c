/* SOFTMAX, int8 in and out (output scale 1/256, zero point -128), bit for bit TFLite Micro's
 * reference: fixed-point exp of the Q5.26 input differences, Q12.19 sum, reciprocal, rounding.
 *
 * The exp term depends only on the int8 difference k = max - x (0 .. 255), so the converter
 * tabulates it (freeml_keras/format/prepared.py softmax_table, in the freeml_prepare words; a
 * build that computes its parameters computes the table too and refuses one that differs) and
 * eval reads it in place, in the model: per class a lookup, a sum and the final scaling, no exp
 * and no state. Table (fm_softmax_params): exp_hi / exp_lo, the Q0.31 exp's 16-bit halves, for
 * k < n_exp (the terms above 255 in Q12.19); small[k] for k < n_small: the Q12.19 term minus
 * 16 * exp_hi (0 .. 16) for k < n_exp, the whole term after. Differences from n_small on (below
 * diff_min, or an exp under 2^11) add nothing and give -128, as the formula does. Bytes:
 * 4 n_exp + n_small, about 4 * 7.6 / s + 13.9 / s for s = beta * input scale, at most 1,280.
 *
 * The final scaling round(round(recip * e / 2^31) / 2^s) - 128 is floor((recip e + 2^30 +
 * 2^(30+s)) / 2^(31+s)) - 128 (the two roundings of positive values nest). It is estimated from
 * one 16 x 16 product, A * exp_hi with A = recip >> (s - 8) (s in 23 .. 31: A < 2^16), whose
 * error is below 3 * 2^15 in units of 2^-23 of the result; when the estimate's 23-bit fraction
 * is that close to the next integer (about 1.6% of classes) the exact 32 x 32 path decides.
 * A model without freeml_prepare (builds with FM_PREPARE_FLOAT only): each class's exp is
 * computed in eval (4 bytes of scratch per class).
 *
 * int16 out (FM_SOFTMAX_INT16; scale 1/65536 within TFLite Micro's 0.1%, zero point -32768):
 * each class's exp computed in eval (4 bytes of scratch per class) and scaled to 16 bits; the
 * table words are read past, not used. */
#include <stddef.h>

#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

#if FM_PREPARE_FLOAT || FM_SOFTMAX_INT16
static int32_t exp_of_diff(const fm_softmax_params *p, int32_t k)
{
    /* the difference -k rescaled to Q5.26, then exp in Q0.31 */
    const int32_t scaled = fm_srdhm((int32_t)((uint32_t)(-k) << p->input_left_shift), p->input_multiplier);
    return fm_exp_on_negative_values_q5(scaled);
}
#endif

#if FM_PREPARE_FLOAT

/* The table's lengths as the converter computes them: to the last non-zero term, the scan ending
 * at the first exp under 2^10 (the exact exp falls by at least 5.5% per step wherever it is near
 * 2^11 within 255 steps, far more than the few units the fixed-point exp is off by). */
static uint32_t table_lengths(const fm_softmax_params *p)
{
    const int32_t kmax = p->diff_min < -255 ? 255 : -p->diff_min;
    int32_t k, n_exp = 0, n_small = 0;
    for (k = 0; k <= kmax; k++) {
        const int32_t e = exp_of_diff(p, k), term = fm_rdbpot(e, 12);
        if (e < 1024) break;
        if (term > 0) n_small = k + 1;
        if (term > 255) n_exp = k + 1;
    }
    return (uint32_t)n_exp | (uint32_t)n_small << 16;
}
#endif

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_softmax_params *p = &op->p.softmax;
    const fm_tensor *in, *out;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "SOFTMAX needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    p->out16 = FM_SOFTMAX_INT16 && op->out >= 0 && it->tensors[op->out].type == FM_INT16;
    if ((s = fm_expect(it, opi, op->out, p->out16 ? FM_INT16 : FM_INT8, &out)) != FM_OK) return s;
    if (in->ndim < 1 || fm_elements(in) != fm_elements(out) || in->dims[in->ndim - 1] != out->dims[out->ndim - 1])
        return fm_fail(it, FM_ERR_FORMAT, "SOFTMAX shapes do not match", opi, -1, 0);
    if (p->out16) {
        /* |scale * 65536 - 1| within 0.1% (TFLite Micro's check), compared on the float's bits */
        const uint32_t b = fm_f32_bits(out->scale);
        if (out->zero_point != -32768 || b + 8388u < FM_F32_ONE_65536 || b > FM_F32_ONE_65536 + 8388u)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "int16 SOFTMAX output must have scale 1/65536, zero point -32768",
                           opi, op->out, 0);
    } else if (out->zero_point != -128 || fm_f32_bits(out->scale) != FM_F32_ONE_256) {
        return fm_fail(it, FM_ERR_UNSUPPORTED, "SOFTMAX output must have scale 1/256, zero point -128", opi, op->out, 0);
    }
    {
        int32_t mult = 0, left = -1, diff_min = 0;
#if FM_PREPARE_FLOAT
        fm_fb fb;
        double beta, real, radius;
        int32_t i;
        fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
        beta = (double)fb_f32(&fb, op->opts, 0, 0.0f);
        if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad SOFTMAX options", opi, -1, 0);
        /* input differences are rescaled to Q5.26 (5 integer bits) */
        real = beta * (double)in->scale * (double)((int32_t)1 << 26);
        if (real > 2147483647.0) real = 2147483647.0;
        if (real > 1.0 && fm_quantize_multiplier(real, &mult, &left)) {
            /* diff_min = -floor(31 * 2^26 / 2^left_shift) */
            radius = 31.0 * (double)((int32_t)1 << 26);
            for (i = 0; i < left; i++) radius *= 0.5;
            diff_min = -(int32_t)radius;
        } else {
            left = -1;                                   /* refused below */
        }
#endif
        p->input_multiplier = fm_pre_value(it, mult);
        p->input_left_shift = fm_pre_value(it, left);
        p->diff_min = fm_pre_value(it, diff_min);
        if (p->input_left_shift < 0 || p->input_left_shift > 31 || p->input_multiplier <= 0 || p->diff_min > 0)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "SOFTMAX beta * input scale out of range", opi, -1, 0);
    }
    p->depth = in->dims[in->ndim - 1];
    if (p->depth > 4096) return fm_fail(it, FM_ERR_UNSUPPORTED, "SOFTMAX over more than 4096 classes", opi, -1, p->depth);
    p->rows = fm_elements(in) / p->depth;
    op->units = (uint32_t)p->rows;
#if FM_SOFTMAX_INT16
    if (p->out16) op->scratch_bytes = 4u * (uint32_t)p->depth;   /* each class's exp */
#endif
    p->n_exp = -1;                                     /* no table */
    p->n_small = 0;
    p->exp_hi = p->exp_lo = NULL;
    p->small = NULL;
    {
        uint32_t computed = 0, lengths, n_exp, n_small;
        const uint8_t *tab;
#if FM_PREPARE_FLOAT
        if (it->pre_blob) computed = table_lengths(p);
#endif
        lengths = (uint32_t)fm_pre_value(it, (int32_t)computed);
        if (!it->pre_blob) {
#if FM_PREPARE_FLOAT
            op->scratch_bytes = 4u * (uint32_t)p->depth;     /* each class's exp, for both passes */
#endif
            return FM_OK;
        }
        n_exp = lengths & 0xFFFFu;
        n_small = lengths >> 16;
        if (n_exp > n_small || n_small > 256u)
            return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: bad SOFTMAX table", opi, -1, (int32_t)lengths);
        tab = fm_pre_words(it, (4u * n_exp + n_small + 3u) / 4u);
        if (!tab) return FM_OK;                          /* fm_pre_end reports the missing words */
        if ((uintptr_t)tab & 1u)
            return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata not 2-byte aligned", opi, -1, 0);
#if FM_PREPARE_FLOAT
        if (lengths == computed) {
            uint32_t k;
            for (k = 0; k < n_small; k++) {
                const int32_t e = exp_of_diff(p, (int32_t)k), term = fm_rdbpot(e, 12);
                const uint16_t hi = (uint16_t)((uint32_t)e >> 16);
                if (k < n_exp ? fm_ld_u16(tab + 2u * k) != hi || fm_ld_u16(tab + 2u * (n_exp + k)) != (uint16_t)e
                                    || tab[4u * n_exp + k] != (uint8_t)(term - ((int32_t)hi << 4))
                              : tab[4u * n_exp + k] != (uint8_t)term) {
                    fm_pre_differs(it);
                    break;
                }
            }
        }
#endif
        p->exp_hi = (const uint16_t *)(const void *)tab;
        p->exp_lo = p->exp_hi + n_exp;
        p->small = tab + 4u * n_exp;
        p->n_exp = (int16_t)n_exp;
        p->n_small = (int16_t)n_small;
    }
    return FM_OK;
}

/* round(round(recip * e / 2^31) / 2^exponent) - 128, at most 127: the reference's last step. */
static int8_t scaled_exp(int32_t recip, int32_t e, int32_t exponent)
{
    const int32_t v = fm_rdbpot(fm_srdhm(recip, e), exponent) - 128;
    return (int8_t)(v > 127 ? 127 : v);
}

/* The Q12.19 sum's reciprocal (Q0.31) and the exponent of the last rounding. */
static int32_t reciprocal(uint32_t sum, int16_t *exponent)
{
    const int16_t headroom = (int16_t)fm_clz32(sum);
    *exponent = (int16_t)(12 - headroom + 31 - 8);
    return fm_one_over_one_plus_x((int32_t)((sum << headroom) - 0x80000000u));
}

/* recip >> (exponent - 8), 15 .. 27 bits: a 16-bit shift after taking the high half */
static uint16_t estimate_factor(int32_t recip, int16_t exponent)
{
    return exponent >= 24 ? (uint16_t)((uint16_t)((uint32_t)recip >> 16) >> (exponent - 24))
                          : (uint16_t)((uint16_t)((uint32_t)recip >> 16) << 1 | (uint16_t)recip >> 15);
}

#if FM_PREPARE_FLOAT
/* Rows of a model without the table: each class's exp computed once (scratch). */
static void eval_direct(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_softmax_params *p = &op->p.softmax;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    int32_t *e = (int32_t *)(void *)(it->arena + op->scratch_off);
    const fm_count depth = (fm_count)p->depth;
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int8_t *x = in + (int32_t)u * p->depth;
        int8_t *o = out + (int32_t)u * p->depth;
        uint32_t sum = 0;
        int32_t recip;
        int16_t exponent;
        int8_t mx = -128;
        fm_count c;
        for (c = 0; c < depth; c++) if (x[c] > mx) mx = x[c];
        for (c = 0; c < depth; c++) {
            const int32_t d = (int32_t)x[c] - mx;
            e[c] = d >= p->diff_min ? exp_of_diff(p, -d) : 0;
            sum += (uint32_t)fm_rdbpot(e[c], 12);                           /* Q12.19 */
        }
        recip = reciprocal(sum, &exponent);
        for (c = 0; c < depth; c++) o[c] = e[c] ? scaled_exp(recip, e[c], exponent) : (int8_t)-128;
    }
}
#endif

#if FM_SOFTMAX_INT16
/* Rows with an int16 output: each class's exp computed once (scratch), 16-bit scaling. */
static void eval_int16(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_softmax_params *p = &op->p.softmax;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int16_t *out = (int16_t *)(void *)fm_data(it, op->out);
    int32_t *e = (int32_t *)(void *)(it->arena + op->scratch_off);
    const fm_count depth = (fm_count)p->depth;
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int8_t *x = in + (int32_t)u * p->depth;
        int16_t *o = out + (int32_t)u * p->depth;
        uint32_t sum = 0;
        int32_t recip, exponent;
        int16_t headroom;
        int8_t mx = -128;
        fm_count c;
        for (c = 0; c < depth; c++) if (x[c] > mx) mx = x[c];
        for (c = 0; c < depth; c++) {
            const int32_t d = (int32_t)x[c] - mx;
            e[c] = d >= p->diff_min ? exp_of_diff(p, -d) : 0;
            sum += (uint32_t)fm_rdbpot(e[c], 12);                           /* Q12.19 */
        }
        headroom = (int16_t)fm_clz32(sum);
        recip = fm_one_over_one_plus_x((int32_t)((sum << headroom) - 0x80000000u));
        exponent = 12 - headroom + 31 - 16;
        for (c = 0; c < depth; c++) {
            int32_t v = -32768;
            if (e[c]) {
                v = fm_rdbpot(fm_srdhm(recip, e[c]), exponent) - 32768;
                if (v > 32767) v = 32767;
            }
            o[c] = (int16_t)v;
        }
    }
}
#define FM_SOFTMAX_EVAL_INT16(it, op, begin, end)                                            \
    do {                                                                                      \
        if ((op)->p.softmax.out16) {                                                          \
            eval_int16(it, op, begin, end);                                                   \
            return;                                                                           \
        }                                                                                     \
    } while (0)
#else
#define FM_SOFTMAX_EVAL_INT16(it, op, begin, end) ((void)0)
#endif

#ifdef FM_SOFTMAX_ASM
/* hwmult_asm.S reads these fields at fixed offsets */
typedef char fm_softmax_layout[(offsetof(fm_softmax_params, exp_hi) == 20 && offsetof(fm_softmax_params, small) == 24
                                && offsetof(fm_softmax_params, n_exp) == 26
                                && offsetof(fm_softmax_params, n_small) == 28) ? 1 : -1];

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_softmax_params *p = &op->p.softmax;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    FM_SOFTMAX_EVAL_INT16(it, op, begin, end);
#if FM_PREPARE_FLOAT
    if (p->n_exp < 0) {
        eval_direct(it, op, begin, end);
        return;
    }
#endif
    for (u = begin; u < end; u++) {
        const int8_t *x = in + (int32_t)u * p->depth;
        int8_t *o = out + (int32_t)u * p->depth;
        uint32_t sum;
        int16_t exponent;
        const int8_t mx = fm_softmax_sum_hwmult(x, (uint16_t)p->depth, p, &sum);
        const int32_t recip = reciprocal(sum, &exponent);
        fm_count c;
        if (exponent <= 31) {
            fm_softmax_out_hwmult(x, o, (uint16_t)p->depth, p, recip, (uint16_t)exponent,
                                  estimate_factor(recip, exponent), mx);
        } else {
            for (c = 0; c < (fm_count)p->depth; c++) {       /* more than ~512 classes */
                const uint16_t k = (uint8_t)((uint8_t)mx - (uint8_t)x[c]);
                o[c] = k < (uint16_t)p->n_exp
                           ? scaled_exp(recip, (int32_t)(((uint32_t)p->exp_hi[k] << 16) | p->exp_lo[k]), exponent)
                           : (int8_t)-128;
            }
        }
    }
}
#else
static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_softmax_params *p = &op->p.softmax;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const uint16_t *hi = p->exp_hi, *lo = p->exp_lo;
    const uint8_t *sm = p->small;
    const uint16_t n_exp = (uint16_t)p->n_exp, n_small = (uint16_t)p->n_small;
    const fm_count depth = (fm_count)p->depth;
    uint32_t u;
    FM_SOFTMAX_EVAL_INT16(it, op, begin, end);
#if FM_PREPARE_FLOAT
    if (p->n_exp < 0) {
        eval_direct(it, op, begin, end);
        return;
    }
#endif
    for (u = begin; u < end; u++) {
        const int8_t *x = in + (int32_t)u * p->depth;
        int8_t *o = out + (int32_t)u * p->depth;
        uint32_t big = 0, small = 0;
        int32_t recip;
        int16_t exponent;
        uint16_t a;
        uint8_t mx, fast;
        int8_t m = -128;
        fm_count c;
        for (c = 0; c < depth; c++) if (x[c] > m) m = x[c];
        mx = (uint8_t)m;
        for (c = 0; c < depth; c++) {
            const uint16_t k = (uint8_t)(mx - (uint8_t)x[c]);          /* max - x, 0 .. 255 */
            if (k < n_small) {
                small += sm[k];
                if (k < n_exp) big += hi[k];
            }
        }
        recip = reciprocal((big << 4) + small, &exponent);              /* of the Q12.19 sum */
        fast = (uint8_t)(exponent <= 31);              /* more than ~512 classes: exact path only */
        a = estimate_factor(recip, exponent);
        for (c = 0; c < depth; c++) {
            const uint16_t k = (uint8_t)(mx - (uint8_t)x[c]);
            int8_t v = -128;
            if (k < n_exp) {
                const uint16_t y = (uint16_t)(fm_umul16_hi(a, hi[k]) + 0x40u);  /* estimate, 2^-7 units */
                if (fast && y >= 0x8000u)
                    v = 127;
                else if (fast && (y & 0x7Fu) < 0x7Eu)
                    v = (int8_t)(uint8_t)(((uint16_t)(y << 1) >> 8) ^ 0x80u);
                else
                    v = scaled_exp(recip, (int32_t)(((uint32_t)hi[k] << 16) | lo[k]), exponent);
            }
            o[c] = v;
        }
    }
}
#endif

const fm_kernel fm_kernel_softmax = {FM_OP_SOFTMAX, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(softmax)};
