/* UNPACK along one axis: output i is the input's slice i along the axis, with that dimension
 * dropped (a copy, as in TFLite Micro; a Keras RNN unrolled by the converter unpacks its time
 * steps this way). Its outputs are in its parameters (prepare.c), up to FM_UNPACK_MAX. One
 * unit: one row of the input (the dimensions before the axis), cut into each output's row. */
#include <string.h>

#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_unpack_params *p = &op->p.unpack;
    const fm_tensor *in, *out;
    fm_fb fb;
    int32_t num, axis, d, k, inner = 1;
    fm_status s;
    if (op->num_in < 1 || p->num < 1) return fm_fail(it, FM_ERR_FORMAT, "UNPACK needs an input and outputs", opi, -1, 0);
    if (op->in[0] < 0 || op->in[0] >= (int16_t)it->num_tensors)         /* (libFuzzer: an absent input) */
        return fm_fail(it, FM_ERR_FORMAT, "operator input missing", opi, op->in[0], 0);
    if ((s = fm_expect(it, opi, op->in[0], it->tensors[op->in[0]].type, &in)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    num = fb_i32(&fb, op->opts, 0, 0);                     /* UnpackOptions.num, .axis */
    axis = fb_i32(&fb, op->opts, 1, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad UNPACK options", opi, -1, 0);
    if (axis < 0) axis += in->ndim;
    if (axis < 0 || axis >= in->ndim) return fm_fail(it, FM_ERR_FORMAT, "UNPACK axis out of range", opi, -1, axis);
    if (num != p->num || num != in->dims[axis])
        return fm_fail(it, FM_ERR_FORMAT, "UNPACK outputs differ from the axis size", opi, -1, num);
    p->outer = 1;
    for (d = 0; d < axis; d++) p->outer *= in->dims[d];
    for (d = axis + 1; d < in->ndim; d++) inner *= in->dims[d];
    for (k = 0; k < num; k++) {
        if ((s = fm_expect(it, opi, p->out[k], in->type, &out)) != FM_OK) return s;
        if (fm_elements(out) != p->outer * inner)
            return fm_fail(it, FM_ERR_FORMAT, "UNPACK output shape does not match", opi, p->out[k], 0);
    }
    p->row = (int32_t)(in->bytes / (uint32_t)(p->outer * num));       /* bytes of one output row */
    op->units = (uint32_t)p->outer;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_unpack_params *p = &op->p.unpack;
    const uint8_t *in = fm_data(it, op->in[0]);
    uint32_t u;
    uint8_t k;
    for (u = begin; u < end; u++) {
        const uint8_t *src = in + u * (uint32_t)p->row * p->num;
        for (k = 0; k < p->num; k++, src += p->row)
            memcpy(fm_data(it, p->out[k]) + u * (uint32_t)p->row, src, (uint32_t)p->row);
    }
}

const fm_kernel fm_kernel_unpack = {FM_OP_UNPACK, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(unpack)};
