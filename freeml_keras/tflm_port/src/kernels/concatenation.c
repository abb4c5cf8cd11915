/* CONCATENATION of int8 tensors that share the output's quantization (a copy, as in TFLite Micro). */
#include <string.h>

#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_concat_params *p = &op->p.concat;
    const fm_tensor *out, *in;
    fm_fb fb;
    int32_t axis, i, d, total = 0;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "CONCATENATION needs inputs", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    axis = fb_i32(&fb, op->opts, 0, 0);
    if (fb_i8(&fb, op->opts, 1, 0) != 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "CONCATENATION with a fused activation", opi, -1, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad CONCATENATION options", opi, -1, 0);
    if (axis < 0) axis += out->ndim;
    if (axis < 0 || axis >= out->ndim) return fm_fail(it, FM_ERR_FORMAT, "CONCATENATION axis out of range", opi, -1, axis);
    p->outer = 1;
    for (d = 0; d < axis; d++) p->outer *= out->dims[d];
    for (i = 0; i < op->num_in; i++) {
        if ((s = fm_expect(it, opi, op->in[i], FM_INT8, &in)) != FM_OK) return s;
        if (in->ndim != out->ndim) return fm_fail(it, FM_ERR_FORMAT, "CONCATENATION ranks differ", opi, op->in[i], 0);
        for (d = 0; d < out->ndim; d++)
            if (d != axis && in->dims[d] != out->dims[d])
                return fm_fail(it, FM_ERR_FORMAT, "CONCATENATION shapes do not match", opi, op->in[i], d);
        if ((s = fm_same_quant(it, opi, in, out)) != FM_OK) return s;
        total += in->dims[axis];
    }
    if (total != out->dims[axis]) return fm_fail(it, FM_ERR_FORMAT, "CONCATENATION output size", opi, op->out, total);
    p->out_row = fm_elements(out) / p->outer;
    op->units = (uint32_t)p->outer;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_concat_params *p = &op->p.concat;
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    uint8_t i;
    for (u = begin; u < end; u++) {
        int8_t *o = out + (int32_t)u * p->out_row;
        for (i = 0; i < op->num_in; i++) {
            const int32_t row = fm_elements(&it->tensors[op->in[i]]) / p->outer;
            memcpy(o, fm_data(it, op->in[i]) + (int32_t)u * row, (uint32_t)row);
            o += row;
        }
    }
}

const fm_kernel fm_kernel_concatenation = {FM_OP_CONCATENATION, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(concat)};
