/* QUANTIZE: float32 -> int8, or int8 -> int8 requantization. */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_requant_params *p = &op->p.rq;
    const fm_tensor *in, *out;
    fm_status s;
    if (op->num_in < 1 || op->in[0] < 0) return fm_fail(it, FM_ERR_FORMAT, "QUANTIZE needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    in = &it->tensors[op->in[0]];
    if (in->type == FM_INT8) {
        if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
        int32_t mult = 0, shift = 127;
#if FM_PREPARE_FLOAT
        if (!(out->scale > 0) || !fm_quantize_multiplier((double)in->scale / (double)out->scale, &mult, &shift))
            shift = 127;                                 /* refused below */
#endif
        p->mult = fm_pre_value(it, mult);
        p->shift = fm_pre_value(it, shift);
        if (p->mult < 0 || p->shift > 30 || p->shift < -31)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "QUANTIZE scales out of range", opi, -1, 0);
    } else if ((s = fm_expect(it, opi, op->in[0], FM_FLOAT32, &in)) != FM_OK) {
        return s;
    }
    if (!(out->scale > 0)) return fm_fail(it, FM_ERR_UNSUPPORTED, "QUANTIZE output scale", opi, -1, 0);
    if (fm_elements(in) != fm_elements(out)) return fm_fail(it, FM_ERR_FORMAT, "QUANTIZE sizes differ", opi, -1, 0);
    p->in_zp = in->zero_point;
    p->out_zp = out->zero_point;
    p->scale = out->scale;
    p->count = fm_elements(out);
    op->units = (uint32_t)p->count;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_requant_params *p = &op->p.rq;
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const int is_float = it->tensors[op->in[0]].type == FM_FLOAT32;
    uint32_t u;
    for (u = begin; u < end; u++) {
        int32_t v;
        if (is_float) {
            const float *x = (const float *)(const void *)fm_data(it, op->in[0]);
            v = fm_round_f(x[u] / p->scale);
            v = v > 1000 ? 1000 : v < -1000 ? -1000 : v;
            v += p->out_zp;
        } else {
            const int8_t *x = (const int8_t *)fm_data(it, op->in[0]);
            v = fm_mul_by_qm((int32_t)x[u] - p->in_zp, p->mult, p->shift) + p->out_zp;
        }
        if (v < -128) v = -128;
        if (v > 127) v = 127;
        out[u] = (int8_t)v;
    }
}

const fm_kernel fm_kernel_quantize = {FM_OP_QUANTIZE, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval)};
