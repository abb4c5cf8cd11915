/* What MAX_POOL_2D and AVERAGE_POOL_2D share: options, window and padding, output range. */
#include "freeml/fm_internal.h"

fm_status fm_pool_prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_pool_params *p = &op->p.pool;
    const fm_tensor *in, *out;
    fm_fb fb;
    int32_t padding, act;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "pooling needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (in->ndim != 4 || out->ndim != 4 || in->dims[0] != out->dims[0] || in->dims[3] != out->dims[3])
        return fm_fail(it, FM_ERR_UNSUPPORTED, "pooling input and output shapes do not match", opi, -1, 0);
    if ((s = fm_same_quant(it, opi, in, out)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    padding = fb_i8(&fb, op->opts, 0, 0);
    p->stride_w = fb_i32(&fb, op->opts, 1, 0);
    p->stride_h = fb_i32(&fb, op->opts, 2, 0);
    p->f_w = fb_i32(&fb, op->opts, 3, 0);
    p->f_h = fb_i32(&fb, op->opts, 4, 0);
    act = fb_i8(&fb, op->opts, 5, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad pooling options", opi, -1, 0);
    p->in_h = in->dims[1]; p->in_w = in->dims[2]; p->channels = in->dims[3];
    p->out_h = out->dims[1]; p->out_w = out->dims[2];
    if ((s = fm_window(it, opi, padding, p->in_h, p->f_h, p->stride_h, 1, p->out_h, &p->pad_h)) != FM_OK) return s;
    if ((s = fm_window(it, opi, padding, p->in_w, p->f_w, p->stride_w, 1, p->out_w, &p->pad_w)) != FM_OK) return s;
    if ((s = fm_activation_range(it, opi, act, out, &p->act_min, &p->act_max)) != FM_OK) return s;
    op->units = (uint32_t)in->dims[0] * (uint32_t)p->out_h;
    return FM_OK;
}
