/* AVERAGE_POOL_2D, int8 (input and output share their quantization). */
#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    return fm_pool_prepare(it, opi, op);
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_pool_params *p = &op->p.pool;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t n = (int32_t)(u / (uint32_t)p->out_h), oy = (int32_t)(u % (uint32_t)p->out_h);
        const int8_t *img = in + n * p->in_h * p->in_w * p->channels;
        const int32_t iy0 = oy * p->stride_h - p->pad_h;
        const int32_t y0 = iy0 < 0 ? -iy0 : 0;
        const int32_t y1 = p->in_h - iy0 < p->f_h ? p->in_h - iy0 : p->f_h;
        int32_t ox, c, y, x;
        for (ox = 0; ox < p->out_w; ox++) {
            const int32_t ix0 = ox * p->stride_w - p->pad_w;
            const int32_t x0 = ix0 < 0 ? -ix0 : 0;
            const int32_t x1 = p->in_w - ix0 < p->f_w ? p->in_w - ix0 : p->f_w;
            const int32_t count = (y1 - y0) * (x1 - x0);
            int8_t *o = out + (((int32_t)u * p->out_w) + ox) * p->channels;
            for (c = 0; c < p->channels; c++) {
                int32_t acc = 0;
                for (y = y0; y < y1; y++)
                    for (x = x0; x < x1; x++)
                        acc += img[((iy0 + y) * p->in_w + ix0 + x) * p->channels + c];
                /* rounded division, ties away from zero (count >= 1: padding < window) */
                if (count > 0) acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                if (acc < p->act_min) acc = p->act_min;
                if (acc > p->act_max) acc = p->act_max;
                o[c] = (int8_t)acc;
            }
        }
    }
}

const fm_kernel fm_kernel_average_pool_2d = {FM_OP_AVERAGE_POOL_2D, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(pool)};
