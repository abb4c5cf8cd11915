/* PAD and PADV2 of an int8 tensor (up to 4-D): constant paddings; the padding value is the
 * output zero point (PAD) or PADV2's constant value, as in TFLite Micro. A unit is one output row
 * (last dimension). */
#include <string.h>

#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_copy_params *p = &op->p.copy;
    const fm_tensor *in, *out, *v;
    const int32_t *pads;
    int32_t d, lead;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "PAD needs an input and paddings", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if ((s = fm_same_quant(it, opi, in, out)) != FM_OK) return s;
    if (in->ndim > 4 || in->ndim != out->ndim)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "PAD of more than 4 dimensions or ranks differ", opi, op->out, in->ndim);
    if ((s = fm_const_i32(it, opi, op->in[1], 2 * in->ndim, &pads)) != FM_OK) return s;
    p->value = out->zero_point;
    if (op->num_in > 2 && op->in[2] >= 0) {
        if ((s = fm_expect(it, opi, op->in[2], FM_INT8, &v)) != FM_OK) return s;
        if (!(v->flags & FM_T_CONST) || fm_elements(v) != 1)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "PADV2 value must be one constant", opi, op->in[2], 0);
        if ((s = fm_same_quant(it, opi, out, v)) != FM_OK) return s;
        p->value = ((const int8_t *)v->cdata)[0];
    }
    lead = 4 - in->ndim;
    for (d = 0; d < 4; d++) {
        const int32_t k = d - lead;
        const int32_t before = k < 0 ? 0 : pads[2 * k], after = k < 0 ? 0 : pads[2 * k + 1];
        const int32_t n = k < 0 ? 1 : in->dims[k], m = k < 0 ? 1 : out->dims[k];
        if (before < 0 || after < 0 || before > 65535 || after > 65535 || n + before + after != m)
            return fm_fail(it, FM_ERR_FORMAT, "PAD paddings do not give the output shape", opi, op->in[1], d);
        p->in_dims[d] = n;
        p->before[d] = before;
        p->dims[d] = m;
    }
    p->elem = 1;
    op->units = (uint32_t)(fm_elements(out) / p->dims[3]);
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_copy_params *p = &op->p.copy;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const int32_t n = p->dims[3], before = p->before[3], width = p->in_dims[3];
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t i2 = (int32_t)u % p->dims[2], r = (int32_t)u / p->dims[2];
        const int32_t j0 = r / p->dims[1] - p->before[0], j1 = r % p->dims[1] - p->before[1];
        const int32_t j2 = i2 - p->before[2];
        int8_t *o = out + (int32_t)u * n;
        if (j0 < 0 || j0 >= p->in_dims[0] || j1 < 0 || j1 >= p->in_dims[1] || j2 < 0 || j2 >= p->in_dims[2]) {
            memset(o, (uint8_t)p->value, (uint32_t)n);
            continue;
        }
        memset(o, (uint8_t)p->value, (uint32_t)before);
        memcpy(o + before, in + ((j0 * p->in_dims[1] + j1) * p->in_dims[2] + j2) * width, (uint32_t)width);
        memset(o + before + width, (uint8_t)p->value, (uint32_t)(n - before - width));
    }
}

const fm_kernel fm_kernel_pad = {FM_OP_PAD, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(copy)};
const fm_kernel fm_kernel_padv2 = {FM_OP_PADV2, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(copy)};
