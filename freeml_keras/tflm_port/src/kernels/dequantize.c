/* DEQUANTIZE: int8 -> float32, scale * (q - zero_point). */
#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_requant_params *p = &op->p.rq;
    const fm_tensor *in, *out;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "DEQUANTIZE needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_FLOAT32, &out)) != FM_OK) return s;
    if (fm_elements(in) != fm_elements(out)) return fm_fail(it, FM_ERR_FORMAT, "DEQUANTIZE sizes differ", opi, -1, 0);
    p->in_zp = in->zero_point;
    p->scale = in->scale;
    p->count = fm_elements(in);
    op->units = (uint32_t)p->count;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_requant_params *p = &op->p.rq;
    const int8_t *x = (const int8_t *)fm_data(it, op->in[0]);
    float *out = (float *)(void *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) out[u] = (float)((double)p->scale * (double)((int32_t)x[u] - p->in_zp));
}

const fm_kernel fm_kernel_dequantize = {FM_OP_DEQUANTIZE, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(rq)};
