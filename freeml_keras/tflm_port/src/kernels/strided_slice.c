/* STRIDED_SLICE (up to 4-D, any element type the runtime holds) with constant begin / end /
 * strides and TFLite's begin, end and shrink-axis masks: start and stop per axis as TFLite's
 * StartForAxis / StopForAxis compute them. A unit is one output row. */
#include "freeml/fm_internal.h"

enum { SS_BEGIN_MASK = 0, SS_END_MASK = 1, SS_ELLIPSIS_MASK = 2, SS_NEW_AXIS_MASK = 3,
       SS_SHRINK_MASK = 4, SS_OFFSET = 5 };

static int32_t clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_copy_params *p = &op->p.copy;
    const fm_tensor *in, *out;
    const int32_t *b, *e, *st;
    int32_t bm, em, sm, d, k, lead, stride = 1, total = 1, kept = 0;
    fm_fb fb;
    fm_status s;
    if (op->num_in < 4) return fm_fail(it, FM_ERR_FORMAT, "STRIDED_SLICE needs input, begin, end, strides", opi, -1, 0);
    in = &it->tensors[op->in[0] < 0 ? op->out : op->in[0]];
    if ((s = fm_expect(it, opi, op->in[0], in->type, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, in->type, &out)) != FM_OK) return s;
    if (in->ndim > 4 || in->ndim < 1)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "STRIDED_SLICE of more than 4 dimensions", opi, op->in[0], in->ndim);
    if ((s = fm_const_i32(it, opi, op->in[1], in->ndim, &b)) != FM_OK) return s;
    if ((s = fm_const_i32(it, opi, op->in[2], in->ndim, &e)) != FM_OK) return s;
    if ((s = fm_const_i32(it, opi, op->in[3], in->ndim, &st)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    bm = fb_i32(&fb, op->opts, SS_BEGIN_MASK, 0);
    em = fb_i32(&fb, op->opts, SS_END_MASK, 0);
    sm = fb_i32(&fb, op->opts, SS_SHRINK_MASK, 0);
    if (fb_i32(&fb, op->opts, SS_ELLIPSIS_MASK, 0) || fb_i32(&fb, op->opts, SS_NEW_AXIS_MASK, 0) ||
        fb_u8(&fb, op->opts, SS_OFFSET, 0))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "STRIDED_SLICE with ellipsis, new-axis mask or offset", opi, -1, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad STRIDED_SLICE options", opi, -1, 0);
    lead = 4 - in->ndim;
    for (k = 0; k < lead; k++) {
        p->dims[k] = 1;
        p->start[k] = p->step[k] = 0;
    }
    for (k = in->ndim - 1; k >= 0; k--) {
        const int32_t size = in->dims[k], step = st[k];
        int32_t start = b[k], stop = e[k], count;
        if (step == 0 || step < -65535 || step > 65535)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "STRIDED_SLICE stride out of range", opi, op->in[3], step);
        if (bm & (1 << k)) start = step > 0 ? INT32_MIN : INT32_MAX;
        if (start < 0) start += size;
        start = step > 0 ? clamp(start, 0, size) : clamp(start, -1, size - 1);
        if (sm & (1 << k)) {
            stop = start + 1;
        } else {
            if (em & (1 << k)) stop = step > 0 ? INT32_MAX : INT32_MIN;
            if (stop < 0) stop += size;
            stop = step > 0 ? clamp(stop, 0, size) : clamp(stop, -1, size - 1);
        }
        if (step > 0) count = stop > start ? 1 + (stop - start - 1) / step : 0;
        else count = start > stop ? 1 + (start - stop - 1) / -step : 0;
        if (count < 1)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "STRIDED_SLICE with an empty output", opi, op->out, k);
        if ((sm & (1 << k)) && count != 1)
            return fm_fail(it, FM_ERR_FORMAT, "STRIDED_SLICE shrinks an axis of more than one", opi, op->out, k);
        p->dims[lead + k] = count;
        p->start[lead + k] = start * stride;
        p->step[lead + k] = count > 1 ? step * stride : 0;   /* |step| < size when count > 1 */
        stride *= size;
        total *= count;
    }
    /* the output shape is the counts of the axes not shrunk, in order */
    for (k = 0, d = 0; k < in->ndim; k++) {
        if (sm & (1 << k)) continue;
        if (d >= out->ndim || out->dims[d] != p->dims[lead + k]) kept = -1;
        d++;
    }
    if (kept < 0 || d != out->ndim || total != fm_elements(out))
        return fm_fail(it, FM_ERR_FORMAT, "STRIDED_SLICE output shape", opi, op->out, total);
    p->elem = (uint8_t)(in->bytes / (uint32_t)fm_elements(in));
    op->units = (uint32_t)(total / p->dims[3]);
    return FM_OK;
}

const fm_kernel fm_kernel_strided_slice = {FM_OP_STRIDED_SLICE, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(fm_copy_eval), FM_OP_RECORD(copy)};
