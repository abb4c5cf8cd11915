/* RESIZE_NEAREST_NEIGHBOR (what the TFLite converter makes of a Keras UpSampling2D): each output
 * pixel a copy of the input pixel TFLite Micro's reference picks, row min(floor or round((y +
 * 0.5 if half pixel centers) * scale), in - 1) with the scale in float32 (in / out, or (in - 1) /
 * (out - 1) with aligned corners), the same for columns. The source rows and columns are the
 * operator's freeml_prepare words (out_h, then out_w), read in place: the targets have no
 * floating point; a host build without them computes each in eval. One unit: one output row. */
#include <string.h>

#include "freeml/fm_internal.h"

#if FM_PREPARE_FLOAT
/* TFLite Micro's GetNearestNeighbor, in float32 (v >= 0: a conversion is its floor). */
static int32_t nearest(int32_t i, int32_t in, int32_t out, uint8_t align, uint8_t half)
{
    const float scale = align && out > 1 ? (float)(in - 1) / (float)(out - 1) : (float)in / (float)out;
    const float v = ((float)i + (half ? 0.5f : 0.0f)) * scale;
    int32_t r = align ? fm_round_f(v) : (int32_t)v;
    if (r > in - 1) r = in - 1;
    return r < 0 ? 0 : r;
}
#endif

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_resize_params *p = &op->p.resize;
    const fm_tensor *in, *out;
    const int32_t *size;
    const uint8_t *words;
    fm_fb fb;
    int32_t k;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "RESIZE_NEAREST_NEIGHBOR needs an input and a size", opi, -1, 0);
    if (op->in[0] < 0 || op->in[0] >= (int16_t)it->num_tensors)
        return fm_fail(it, FM_ERR_FORMAT, "operator input missing", opi, op->in[0], 0);
    if ((s = fm_expect(it, opi, op->in[0], it->tensors[op->in[0]].type, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, in->type, &out)) != FM_OK) return s;
    if ((s = fm_const_i32(it, opi, op->in[1], 2, &size)) != FM_OK) return s;
    if (in->ndim != 4 || out->ndim != 4 || out->dims[0] != in->dims[0] || out->dims[3] != in->dims[3] ||
        size[0] != out->dims[1] || size[1] != out->dims[2])
        return fm_fail(it, FM_ERR_FORMAT, "RESIZE_NEAREST_NEIGHBOR shapes do not match its size", opi, -1, 0);
    if (in->type == FM_INT8 || in->type == FM_INT16) {
        if (!fm_same_scale(in->scale, out->scale) || in->zero_point != out->zero_point)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "input and output quantization differ", opi, op->out, 0);
    }
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    p->align = (uint8_t)(fb_u8(&fb, op->opts, 0, 0) != 0u);     /* align_corners, half_pixel_centers */
    p->half = (uint8_t)(fb_u8(&fb, op->opts, 1, 0) != 0u);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad RESIZE_NEAREST_NEIGHBOR options", opi, -1, 0);
    p->batch = in->dims[0];
    p->in_h = in->dims[1];
    p->in_w = in->dims[2];
    p->out_h = out->dims[1];
    p->out_w = out->dims[2];
    p->pixel = (int32_t)(in->bytes / (uint32_t)fm_elements(in)) * in->dims[3];
    p->map = NULL;
    words = fm_pre_words(it, (uint32_t)(p->out_h + p->out_w));
    if (words) {
        for (k = 0; k < p->out_h + p->out_w; k++) {
            const int32_t v = (int32_t)fm_ld_u32(words + 4u * (uint32_t)k);
            const int32_t n = k < p->out_h ? p->in_h : p->in_w;
            if (v < 0 || v >= n)
                return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: bad resize source", opi, -1, v);
#if FM_PREPARE_FLOAT
            if (v != (k < p->out_h ? nearest(k, p->in_h, p->out_h, p->align, p->half)
                                   : nearest(k - p->out_h, p->in_w, p->out_w, p->align, p->half)))
                fm_pre_differs(it);
#endif
        }
        p->map = words;
    } else if (!FM_PREPARE_FLOAT && !it->pre_blob) {
        (void)fm_pre_value(it, 0);                    /* no metadata: refused by fm_pre_end */
    }
    op->units = (uint32_t)p->batch * (uint32_t)p->out_h;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_resize_params *p = &op->p.resize;
    const uint8_t *in = fm_data(it, op->in[0]);
    uint8_t *out = fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t b = (int32_t)u / p->out_h, y = (int32_t)u % p->out_h;
        int32_t x, sy, sx;
        uint8_t *o = out + (int32_t)u * p->out_w * p->pixel;
#if FM_PREPARE_FLOAT
        sy = p->map ? (int32_t)fm_ld_u32(p->map + 4u * (uint32_t)y) : nearest(y, p->in_h, p->out_h, p->align, p->half);
#else
        sy = (int32_t)fm_ld_u32(p->map + 4u * (uint32_t)y);
#endif
        for (x = 0; x < p->out_w; x++, o += p->pixel) {
#if FM_PREPARE_FLOAT
            sx = p->map ? (int32_t)fm_ld_u32(p->map + 4u * (uint32_t)(p->out_h + x))
                        : nearest(x, p->in_w, p->out_w, p->align, p->half);
#else
            sx = (int32_t)fm_ld_u32(p->map + 4u * (uint32_t)(p->out_h + x));
#endif
            memcpy(o, in + ((b * p->in_h + sy) * p->in_w + sx) * p->pixel, (uint32_t)p->pixel);
        }
    }
}

const fm_kernel fm_kernel_resize_nearest_neighbor = {FM_OP_RESIZE_NEAREST_NEIGHBOR, FM_KERNEL_PREPARE(prepare),
                                                     FM_KERNEL_EVAL(eval), FM_OP_RECORD(resize)};
