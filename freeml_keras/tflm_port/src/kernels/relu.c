/* RELU, int8: the input rescaled to the output's scale and clamped at the output's zero point
 * (TFLite Micro's ReluQuantized; the converter leaves a ReLU unfused after some layers, a
 * Conv2DTranspose among them). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_requant_params *p = &op->p.rq;
    const fm_tensor *in, *out;
    int32_t q = 0, sh = 127;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "RELU needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (fm_elements(in) != fm_elements(out)) return fm_fail(it, FM_ERR_FORMAT, "RELU sizes differ", opi, -1, 0);
#if FM_PREPARE_FLOAT
    {
        const float m = in->scale / out->scale;        /* divided in float, as TFLite Micro does */
        if (!(out->scale > 0) || !fm_quantize_multiplier((double)m, &q, &sh)) sh = 127;
    }
#endif
    p->mult = fm_pre_value(it, q);
    p->shift = fm_pre_value(it, sh);
    if (p->shift > 30 || p->shift < -31 || p->mult < 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "RELU scales out of range", opi, op->in[0], p->shift);
    p->in_zp = in->zero_point;
    p->out_zp = out->zero_point;
    p->count = fm_elements(out);
    op->units = (uint32_t)p->count;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_requant_params *p = &op->p.rq;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t v = p->out_zp + fm_mul_by_qm_fast((int32_t)in[u] - p->in_zp, p->mult, p->shift);
        out[u] = (int8_t)(v < p->out_zp ? p->out_zp : v > 127 ? 127 : v);
    }
}

const fm_kernel fm_kernel_relu = {FM_OP_RELU, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(rq)};
