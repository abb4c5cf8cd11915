/* SOFTMAX, int8 in, int8 out (output scale 1/256, zero point -128) or int16 out (scale 1/65536
 * within TFLite Micro's 0.1%, zero point -32768), with TFLite's fixed-point exp (Q5.26 input
 * differences) and reciprocal, so the result matches bit for bit. */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

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
    op->scratch_bytes = 4u * (uint32_t)p->depth;       /* exp of each class, for both passes */
    return FM_OK;
}

static int32_t scaled_diff(const fm_softmax_params *p, int32_t diff)
{
    return fm_srdhm((int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_softmax_params *p = &op->p.softmax;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    int16_t *out16 = (int16_t *)(void *)out;
    int32_t *e = (int32_t *)(void *)(it->arena + op->scratch_off);
    const int32_t depth = p->depth;
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int8_t *x = in + (int32_t)u * depth;
        int8_t *o = out + (int32_t)u * depth;
        int32_t c, mx = -128, sum = 0, headroom, exponent, recip;
        for (c = 0; c < depth; c++) if (x[c] > mx) mx = x[c];
        /* exp(d) of each class once (Q0.31); 0 below diff_min, where the class adds nothing and
         * its output is -128, as the exact formula gives for a zero exp too */
        for (c = 0; c < depth; c++) {
            const int32_t d = (int32_t)x[c] - mx;
            e[c] = d >= p->diff_min ? fm_exp_on_negative_values_q5(scaled_diff(p, d)) : 0;
            sum += fm_rdbpot(e[c], 12);                                  /* Q12.19 */
        }
        headroom = fm_clz32((uint32_t)sum);
        recip = fm_one_over_one_plus_x((int32_t)(((uint32_t)sum << headroom) - 0x80000000u));
        if (FM_SOFTMAX_INT16 && p->out16) {
            int16_t *o16 = out16 + (int32_t)u * depth;
            exponent = 12 - headroom + 31 - 16;
            for (c = 0; c < depth; c++) {
                int32_t v = -32768;
                if (e[c]) {
                    v = fm_rdbpot(fm_srdhm(recip, e[c]), exponent) - 32768;
                    if (v > 32767) v = 32767;
                }
                o16[c] = (int16_t)v;
            }
            continue;
        }
        exponent = 12 - headroom + 31 - 8;
        for (c = 0; c < depth; c++) {
            int32_t v = -128;
            if (e[c]) {
                v = fm_rdbpot(fm_srdhm(recip, e[c]), exponent) - 128;
                if (v > 127) v = 127;
            }
            o[c] = (int8_t)v;
        }
    }
}

const fm_kernel fm_kernel_softmax = {FM_OP_SOFTMAX, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval)};
