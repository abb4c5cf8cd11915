/* QUANTIZE: float32 -> int8, or a requantization between int8, uint8 and int16 (TFLite Micro's
 * Requantize: one multiplier, saturated to the output type). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static int integer(uint8_t type) { return type == FM_INT8 || type == FM_UINT8 || type == FM_INT16; }

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_requant_params *p = &op->p.rq;
    const fm_tensor *in, *out;
    fm_status s;
    if (op->num_in < 1 || op->in[0] < 0) return fm_fail(it, FM_ERR_FORMAT, "QUANTIZE needs an input", opi, -1, 0);
    in = &it->tensors[op->in[0]];
    out = &it->tensors[op->out];
    if (integer(in->type) && integer(out->type) && !(in->type == FM_UINT8 && out->type == FM_UINT8)) {
        int32_t mult = 0, shift = 127;
        if ((s = fm_expect(it, opi, op->in[0], in->type, &in)) != FM_OK) return s;
        if ((s = fm_expect(it, opi, op->out, out->type, &out)) != FM_OK) return s;
#if FM_PREPARE_FLOAT
        if (!(out->scale > 0) || !fm_quantize_multiplier((double)in->scale / (double)out->scale, &mult, &shift))
            shift = 127;                                 /* refused below */
#endif
        p->mult = fm_pre_value(it, mult);
        p->shift = fm_pre_value(it, shift);
        if (p->mult < 0 || p->shift > 30 || p->shift < -31)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "QUANTIZE scales out of range", opi, -1, 0);
    } else {
#if !FM_QUANTIZE_FLOAT
        if (in->type == FM_FLOAT32)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "QUANTIZE from float32: left out of this build", opi, op->in[0],
                           in->type);
#endif
        if ((s = fm_expect(it, opi, op->in[0], FM_FLOAT32, &in)) != FM_OK) return s;
        if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
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
    const uint8_t in_type = it->tensors[op->in[0]].type, out_type = it->tensors[op->out].type;
    const uint8_t *x = fm_data(it, op->in[0]);
    uint8_t *y = fm_data(it, op->out);
    const int32_t lo = out_type == FM_UINT8 ? 0 : out_type == FM_INT16 ? -32768 : -128;
    const int32_t hi = out_type == FM_UINT8 ? 255 : out_type == FM_INT16 ? 32767 : 127;
    uint32_t u;
    for (u = begin; u < end; u++) {
        int32_t v;
#if FM_QUANTIZE_FLOAT
        if (in_type == FM_FLOAT32) {
            v = fm_round_f(((const float *)(const void *)x)[u] / p->scale);
            v = v > 1000 ? 1000 : v < -1000 ? -1000 : v;
            v += p->out_zp;
        } else
#endif
        {
            const int32_t q = in_type == FM_INT8 ? (int32_t)((const int8_t *)x)[u]
                              : in_type == FM_UINT8 ? (int32_t)x[u]
                              : (int32_t)((const int16_t *)(const void *)x)[u];
            v = fm_mul_by_qm(q - p->in_zp, p->mult, p->shift) + p->out_zp;
        }
        if (v < lo) v = lo;
        if (v > hi) v = hi;
        if (out_type == FM_INT16) ((int16_t *)(void *)y)[u] = (int16_t)v;
        else if (out_type == FM_UINT8) y[u] = (uint8_t)v;
        else ((int8_t *)y)[u] = (int8_t)v;
    }
}

const fm_kernel fm_kernel_quantize = {FM_OP_QUANTIZE, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(rq)};
