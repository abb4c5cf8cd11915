/* SOFTMAX, int8 in and out (output scale 1/256, zero point -128), bit for bit TFLite Micro's
 * reference: fixed-point exp of the Q5.26 input differences, Q12.19 sum, reciprocal, rounding.
 *
 * The exp term depends only on the int8 difference k = max - x (0 .. 255), so prepare tabulates
 * it once (state, sealed with the prepared model); eval does per class a lookup, a sum and the
 * final scaling. Table (fm_softmax_params): exp_hi / exp_lo, the Q0.31 exp's 16-bit halves, for
 * k < n_exp (the terms above 255 in Q12.19); small[k] for k < n_small: the Q12.19 term minus
 * 16 * exp_hi (0 .. 16) for k < n_exp, the whole term (<= 255) after. Differences from n_small
 * on (below diff_min, or an exp under 2^11) add nothing and give -128, as the formula does.
 * Bytes: 4 n_exp + n_small, about 4 * 7.65 / (beta * scale) + 13.95 / (beta * scale) (the
 * compressed cnn_s, 0.106: 421 B; at most 1,280).
 *
 * The final scaling round(round(recip * e / 2^31) / 2^s) - 128 is floor((recip e + 2^30 +
 * 2^(30+s)) / 2^(31+s)) - 128 (the two roundings of positive values nest). It is estimated from
 * one 16 x 16 product, A * exp_hi with A = recip >> (s - 8) (s in 23 .. 31: A < 2^16), whose
 * error is below 3 * 2^15 in units of 2^-23 of the result; when the estimate's 23-bit fraction
 * is that close to the next integer (about 1.6% of classes) the exact 32 x 32 path decides. */
#include <stddef.h>

#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static int32_t exp_of_diff(const fm_softmax_params *p, int32_t k)
{
    /* the difference -k rescaled to Q5.26, then exp in Q0.31 */
    const int32_t scaled = fm_srdhm((int32_t)((uint32_t)(-k) << p->input_left_shift), p->input_multiplier);
    return fm_exp_on_negative_values_q5(scaled);
}

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_softmax_params *p = &op->p.softmax;
    const fm_tensor *in, *out;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "SOFTMAX needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (in->ndim < 1 || fm_elements(in) != fm_elements(out) || in->dims[in->ndim - 1] != out->dims[out->ndim - 1])
        return fm_fail(it, FM_ERR_FORMAT, "SOFTMAX shapes do not match", opi, -1, 0);
    if (out->zero_point != -128 || fm_f32_bits(out->scale) != FM_F32_ONE_256)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "SOFTMAX output must have scale 1/256, zero point -128", opi, op->out, 0);
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
    {
        /* the table, as long as the state block's sizing made it (fm_softmax_table_len) */
        const int32_t kmax = p->diff_min < -255 ? 255 : -p->diff_min;
        int16_t n_exp, n_small;
        int32_t k;
        uint16_t *hi;
        uint8_t *sm;
        fm_fb fb;
        fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
        fm_softmax_table_len(fb_u32(&fb, op->opts, 0, 0), fm_f32_bits(in->scale), &n_exp, &n_small);
        if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad SOFTMAX options", opi, -1, 0);
        hi = (uint16_t *)fm_state_alloc(it, 4u * (uint32_t)n_exp + (uint32_t)n_small);
        if (!hi) return FM_ERR_MEMORY;
        sm = (uint8_t *)(hi + 2 * n_exp);
        for (k = 0; k < n_small; k++) {
            /* a difference below diff_min adds nothing and gives -128: an exp of 0 does that */
            const int32_t e = k <= kmax ? exp_of_diff(p, k) : 0, term = fm_rdbpot(e, 12);   /* Q12.19 */
            if (k < n_exp) {
                hi[k] = (uint16_t)((uint32_t)e >> 16);
                hi[n_exp + k] = (uint16_t)e;
                sm[k] = (uint8_t)(term - ((int32_t)hi[k] << 4));
            } else {
                if (term > 255) return fm_fail(it, FM_ERR_UNSUPPORTED, "SOFTMAX exp table bound", opi, -1, k);
                sm[k] = (uint8_t)term;
            }
        }
        p->exp_hi = hi;
        p->exp_lo = hi + n_exp;
        p->small = sm;
        p->n_exp = n_exp;
        p->n_small = n_small;
    }
    return FM_OK;
}

/* round(round(recip * e / 2^31) / 2^exponent) - 128, at most 127: the reference's last step. */
static int8_t scaled_exp(int32_t recip, int32_t e, int32_t exponent)
{
    const int32_t v = fm_rdbpot(fm_srdhm(recip, e), exponent) - 128;
    return (int8_t)(v > 127 ? 127 : v);
}

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
    for (u = begin; u < end; u++) {
        const int8_t *x = in + (int32_t)u * p->depth;
        int8_t *o = out + (int32_t)u * p->depth;
        uint32_t sum;
        const int8_t mx = fm_softmax_sum_hwmult(x, (uint16_t)p->depth, p, &sum);
        const int16_t headroom = (int16_t)fm_clz32(sum);
        const int32_t recip = fm_one_over_one_plus_x((int32_t)((sum << headroom) - 0x80000000u));
        const int16_t exponent = (int16_t)(12 - headroom + 31 - 8);
        fm_count c;
        if (exponent <= 31) {
            const uint16_t a = exponent >= 24 ? (uint16_t)((uint16_t)((uint32_t)recip >> 16) >> (exponent - 24))
                                              : (uint16_t)((uint16_t)((uint32_t)recip >> 16) << 1 | (uint16_t)recip >> 15);
            fm_softmax_out_hwmult(x, o, (uint16_t)p->depth, p, recip, (uint16_t)exponent, a, mx);
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
    for (u = begin; u < end; u++) {
        const int8_t *x = in + (int32_t)u * p->depth;
        int8_t *o = out + (int32_t)u * p->depth;
        uint32_t big = 0, small = 0;
        int32_t sum, headroom, exponent, recip;
        uint16_t a;
        uint8_t mx = 0, fast;
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
        sum = (int32_t)((big << 4) + small);                             /* Q12.19 */
        headroom = fm_clz32((uint32_t)sum);
        recip = fm_one_over_one_plus_x((int32_t)(((uint32_t)sum << headroom) - 0x80000000u));
        exponent = 12 - headroom + 31 - 8;
        fast = (uint8_t)(exponent <= 31);              /* more than ~512 classes: exact path only */
        /* recip >> (exponent - 8), 15 .. 27 bits: a 16-bit shift after taking the high half */
        a = exponent >= 24 ? (uint16_t)((uint16_t)((uint32_t)recip >> 16) >> (exponent - 24))
                           : (uint16_t)((uint16_t)((uint32_t)recip >> 16) << 1 | (uint16_t)recip >> 15);
        for (c = 0; c < depth; c++) {
            const uint16_t k = (uint8_t)(mx - (uint8_t)x[c]);
            int8_t v = -128;
            if (k < n_exp) {
                const uint16_t y = (uint16_t)(fm_umul16_hi(a, hi[k]) + 0x40u);  /* estimate, 2^-23 units */
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

const fm_kernel fm_kernel_softmax = {FM_OP_SOFTMAX, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval)};
