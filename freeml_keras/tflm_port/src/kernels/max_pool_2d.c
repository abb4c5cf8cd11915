/* MAX_POOL_2D, int8 (input and output share their quantization). */
#include "freeml/fm_internal.h"
#include "freeml/fm_mac_dsp.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    return fm_pool_prepare(it, opi, op);
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_pool_params *p = &op->p.pool;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const int32_t ch = p->channels, row_step = p->in_w * ch;
    const int act_min = (int)p->act_min, act_max = (int)p->act_max;
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t n = (int32_t)(u / (uint32_t)p->out_h), oy = (int32_t)(u % (uint32_t)p->out_h);
        const int8_t *img = in + n * p->in_h * row_step;
        const int32_t iy0 = oy * p->stride_h - p->pad_h;
        const int32_t y0 = iy0 < 0 ? -iy0 : 0;
        const int32_t y1 = p->in_h - iy0 < p->f_h ? p->in_h - iy0 : p->f_h;
        fm_count ox, c, y, x;
        for (ox = 0; ox < (fm_count)p->out_w; ox++) {
            const int32_t ix0 = ox * p->stride_w - p->pad_w;
            const int32_t x0 = ix0 < 0 ? -ix0 : 0;
            const int32_t x1 = p->in_w - ix0 < p->f_w ? p->in_w - ix0 : p->f_w;
            const int8_t *corner = img + (iy0 + y0) * row_step + (ix0 + x0) * ch;   /* window, channel 0 */
            int8_t *o = out + (((int32_t)u * p->out_w) + ox) * ch;
            c = 0;
#if FM_MAC_DSP
            if (ch >= 4 && y1 > y0 && x1 > x0) {     /* four channels per word, all of them */
                c = (fm_count)ch;
                fm_max_pool_pixel_dsp(corner, (uint32_t)(y1 - y0), (uint32_t)(x1 - x0), row_step, ch, act_min,
                                      act_max, o);
            }
#endif
            for (; c < (fm_count)ch; c++) {
                const int8_t *row = corner + c;
                int m = -128;                   /* int8 values: 16-bit compares on 16-bit targets */
                /* walk the window with pointer steps: no index products per element */
                for (y = (fm_count)y0; y < (fm_count)y1; y++, row += row_step) {
                    const int8_t *px = row;
                    for (x = (fm_count)x0; x < (fm_count)x1; x++, px += ch)
                        if (*px > m) m = *px;
                }
                if (m < act_min) m = act_min;
                if (m > act_max) m = act_max;
                o[c] = (int8_t)m;
            }
        }
    }
}

const fm_kernel fm_kernel_max_pool_2d = {FM_OP_MAX_POOL_2D, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(pool)};
