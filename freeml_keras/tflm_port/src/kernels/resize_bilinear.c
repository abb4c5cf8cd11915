/* RESIZE_BILINEAR, int8 (a Keras UpSampling2D with bilinear interpolation): TFLite Micro's
 * integer reference, all in 10-bit fixed point: the source position of each output row and
 * column at scale (1024 in + out / 2) / out (aligned corners: of in - 1 and out - 1), the four
 * neighbours weighted in 2^-20 and rounded half away from zero. No floating point, so the
 * targets need no precomputed words. One unit: one output row. */
#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_resize_params *p = &op->p.resize;
    const fm_tensor *in, *out;
    const int32_t *size;
    fm_fb fb;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "RESIZE_BILINEAR needs an input and a size", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if ((s = fm_const_i32(it, opi, op->in[1], 2, &size)) != FM_OK) return s;
    if (in->ndim != 4 || out->ndim != 4 || out->dims[0] != in->dims[0] || out->dims[3] != in->dims[3] ||
        size[0] != out->dims[1] || size[1] != out->dims[2])
        return fm_fail(it, FM_ERR_FORMAT, "RESIZE_BILINEAR shapes do not match its size", opi, -1, 0);
    if ((s = fm_same_quant(it, opi, in, out)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    p->align = (uint8_t)(fb_u8(&fb, op->opts, 2, 0) != 0u);     /* ResizeBilinearOptions: align_corners, */
    p->half = (uint8_t)(fb_u8(&fb, op->opts, 3, 0) != 0u);      /* half_pixel_centers (ids 2, 3) */
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad RESIZE_BILINEAR options", opi, -1, 0);
    if (p->align && p->half)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "RESIZE_BILINEAR with both aligned corners and half-pixel centers", opi, -1, 0);
    p->batch = in->dims[0];
    p->in_h = in->dims[1];
    p->in_w = in->dims[2];
    p->out_h = out->dims[1];
    p->out_w = out->dims[2];
    p->pixel = in->dims[3];
    p->map = NULL;
    p->scale_h = p->align && p->out_h > 1 ? (1024 * (p->in_h - 1) + (p->out_h - 1) / 2) / (p->out_h - 1)
                                          : (1024 * p->in_h + p->out_h / 2) / p->out_h;
    p->scale_w = p->align && p->out_w > 1 ? (1024 * (p->in_w - 1) + (p->out_w - 1) / 2) / (p->out_w - 1)
                                          : (1024 * p->in_w + p->out_w / 2) / p->out_w;
    op->units = (uint32_t)p->batch * (uint32_t)p->out_h;
    return FM_OK;
}

/* The source position of output coordinate v in 1/1024 and its two neighbours. */
static void position(int32_t v, int32_t scale, uint8_t half, int32_t size, int32_t *at, int32_t *lo, int32_t *hi)
{
    *at = half ? v * scale + scale / 2 - 512 : v * scale;
    *lo = *at / 1024 > 0 ? *at / 1024 : 0;                 /* (C division truncates, as C++'s) */
    *hi = (*at + 1023) / 1024 < size - 1 ? (*at + 1023) / 1024 : size - 1;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_resize_params *p = &op->p.resize;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t b = (int32_t)u / p->out_h, y = (int32_t)u % p->out_h;
        const int8_t *plane = in + b * p->in_h * p->in_w * p->pixel;
        int8_t *o = out + (int32_t)u * p->out_w * p->pixel;
        int32_t ay, y0, y1, x, c;
        position(y, p->scale_h, p->half, p->in_h, &ay, &y0, &y1);
        for (x = 0; x < p->out_w; x++) {
            int32_t ax, x0, x1, dy, dx;
            const int8_t *r0, *r1;
            position(x, p->scale_w, p->half, p->in_w, &ax, &x0, &x1);
            dy = ay - 1024 * y0;
            dx = ax - 1024 * x0;
            r0 = plane + y0 * p->in_w * p->pixel;
            r1 = plane + y1 * p->in_w * p->pixel;
            for (c = 0; c < p->pixel; c++, o++) {
                /* |sum| <= 128 * 2048 * 2048: 32 bits suffice for int8 */
                const int32_t v = FM_MUL32(FM_MUL32(r0[x0 * p->pixel + c], 1024 - dy), 1024 - dx) +
                                  FM_MUL32(FM_MUL32(r1[x0 * p->pixel + c], dy), 1024 - dx) +
                                  FM_MUL32(FM_MUL32(r0[x1 * p->pixel + c], 1024 - dy), dx) +
                                  FM_MUL32(FM_MUL32(r1[x1 * p->pixel + c], dy), dx);
                *o = (int8_t)((v + (v > 0 ? 524288 : -524288)) / 1048576);
            }
        }
    }
}

const fm_kernel fm_kernel_resize_bilinear = {FM_OP_RESIZE_BILINEAR, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(resize)};
