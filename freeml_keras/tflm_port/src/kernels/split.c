/* SPLIT (equal parts) and SPLIT_V (given sizes) along one axis: a copy, as in TFLite Micro. The
 * outputs follow the inputs in op->in (prepare.c); the axis is a constant. One unit: one row of
 * the input (the dimensions before the axis), cut into each output's row. */
#include <string.h>

#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_split_params *p = &op->p.split;
    const uint8_t first = op->code == FM_OP_SPLIT ? 2u : 3u;
    const int16_t in_t = op->code == FM_OP_SPLIT ? op->in[1] : op->in[0];
    const int16_t axis_t = op->code == FM_OP_SPLIT ? op->in[0] : op->in[2];
    const fm_tensor *in, *out;
    const int32_t *axis_v;
    int32_t axis, d, total = 0;
    uint8_t k;
    fm_status s;
    if (op->num_in <= first || op->out < 0 || op->out != op->in[first])
        return fm_fail(it, FM_ERR_FORMAT, "SPLIT needs its inputs and outputs", opi, -1, 0);
    if (in_t < 0 || in_t >= (int16_t)it->num_tensors) return fm_fail(it, FM_ERR_FORMAT, "operator input missing", opi, in_t, 0);
    if ((s = fm_expect(it, opi, in_t, it->tensors[in_t].type, &in)) != FM_OK) return s;
    if (op->code == FM_OP_SPLIT_V) {                 /* size_splits: constant int32, one per output */
        const int32_t *sizes;
        if ((s = fm_const_i32(it, opi, op->in[1], op->num_in - first, &sizes)) != FM_OK) return s;
    }
    if ((s = fm_const_i32(it, opi, axis_t, 1, &axis_v)) != FM_OK) return s;
    axis = axis_v[0] < 0 ? axis_v[0] + in->ndim : axis_v[0];
    if (axis < 0 || axis >= in->ndim) return fm_fail(it, FM_ERR_FORMAT, "SPLIT axis out of range", opi, axis_t, axis_v[0]);
    p->first = first;
    p->outer = 1;
    for (d = 0; d < axis; d++) p->outer *= in->dims[d];
    for (k = first; k < op->num_in; k++) {
        if ((s = fm_expect(it, opi, op->in[k], in->type, &out)) != FM_OK) return s;
        if (out->ndim != in->ndim) return fm_fail(it, FM_ERR_FORMAT, "SPLIT output rank differs", opi, op->in[k], 0);
        for (d = 0; d < in->ndim; d++)
            if (d != axis && out->dims[d] != in->dims[d])
                return fm_fail(it, FM_ERR_FORMAT, "SPLIT output shape does not match", opi, op->in[k], d);
        if (op->code == FM_OP_SPLIT && (int32_t)out->dims[axis] * (int32_t)(op->num_in - first) != (int32_t)in->dims[axis])
            return fm_fail(it, FM_ERR_FORMAT, "SPLIT into unequal parts", opi, op->in[k], out->dims[axis]);
        total += out->dims[axis];
    }
    if (total != in->dims[axis]) return fm_fail(it, FM_ERR_FORMAT, "SPLIT outputs do not add up to the input", opi, in_t, total);
    p->in_row = (int32_t)(in->bytes / (uint32_t)p->outer);
    op->units = (uint32_t)p->outer;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_split_params *p = &op->p.split;
    const uint8_t *in = fm_data(it, op->code == FM_OP_SPLIT ? op->in[1] : op->in[0]);
    uint32_t u;
    uint8_t k;
    for (u = begin; u < end; u++) {
        const uint8_t *src = in + u * (uint32_t)p->in_row;
        for (k = p->first; k < op->num_in; k++) {
            const uint32_t row = it->tensors[op->in[k]].bytes / (uint32_t)p->outer;
            memcpy(fm_data(it, op->in[k]) + u * row, src, row);
            src += row;
        }
    }
}

const fm_kernel fm_kernel_split = {FM_OP_SPLIT, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(split)};
const fm_kernel fm_kernel_split_v = {FM_OP_SPLIT_V, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(split)};
