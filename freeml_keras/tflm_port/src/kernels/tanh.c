/* TANH, int8: the input rescaled to Q4.27, gemmlowp's fixed-point tanh, output with scale 1/128
 * and zero point 0 (TFLite Micro's reference; the GRU cell of a Keras GRU unrolled by the
 * converter uses it). The input rescaling is LOGISTIC's (the same words in freeml_prepare). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_logistic_params *p = &op->p.logistic;
    const fm_tensor *in, *out;
    int32_t q = 0, sh = 0, radius = 0;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "TANH needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (out->zero_point != 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "TANH output zero point must be 0", opi, op->out, out->zero_point);
    if (fm_elements(in) != fm_elements(out)) return fm_fail(it, FM_ERR_FORMAT, "TANH sizes differ", opi, -1, 0);
#if FM_PREPARE_FLOAT
    {
        /* input scale * 2^27 = q * 2^(sh - 31); radius = floor(15 * 2^27 / 2^sh) */
        double r = 15.0 * 134217728.0;
        int32_t k;
        if (!(in->scale > 0) || !fm_quantize_multiplier((double)in->scale * 134217728.0, &q, &sh) ||
            sh < 0 || sh > 62) {
            sh = -1;                                                      /* refused below */
        } else {
            for (k = 0; k < sh; k++) r *= 0.5;
            radius = r >= 2147483647.0 ? -1 : (int32_t)r;
        }
    }
#endif
    p->mult = fm_pre_value(it, q);
    p->shift = fm_pre_value(it, sh);
    p->radius = fm_pre_value(it, radius);
    if (p->shift < 0 || p->shift > 31 || p->mult <= 0 || p->radius < 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "TANH input scale out of range", opi, op->in[0], p->shift);
    p->in_zp = in->zero_point;
    p->count = fm_elements(out);
    op->units = (uint32_t)p->count;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_logistic_params *p = &op->p.logistic;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t x = (int32_t)in[u] - p->in_zp;
        int32_t v;
        if (x <= -p->radius) {
            v = -128;
        } else if (x >= p->radius) {
            v = 127;
        } else {
            v = fm_rdbpot(fm_tanh_fixed(fm_mul_by_qm(x, p->mult, p->shift), 4), 24);
            v = v < -128 ? -128 : v > 127 ? 127 : v;
        }
        out[u] = (int8_t)v;
    }
}

const fm_kernel fm_kernel_tanh = {FM_OP_TANH, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval)};
