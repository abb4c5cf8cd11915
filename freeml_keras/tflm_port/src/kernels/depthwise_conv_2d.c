/* DEPTHWISE_CONV_2D, int8 per-channel; dense weights or CSR weights (CSR over the output
 * channels of each filter tap; accumulated in a per-op scratch row of int32). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"
#include "freeml/fm_mac_dsp.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_conv_params *p = &op->p.conv;
    const fm_tensor *in, *f, *fd, *out, *bias;
    fm_fb fb;
    int32_t padding, act;
    fm_status s;
    if ((s = fm_weighted_operands(it, opi, op, &in, &f, &fd, &out, &bias)) != FM_OK) return s;
    if (in->ndim != 4 || f->ndim != 4 || out->ndim != 4 || f->dims[0] != 1)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "DEPTHWISE_CONV_2D tensors must be 4-D", opi, -1, 0);
    p->in_h = in->dims[1]; p->in_w = in->dims[2]; p->in_c = in->dims[3];
    p->k_h = f->dims[1]; p->k_w = f->dims[2]; p->out_c = f->dims[3];
    p->out_h = out->dims[1]; p->out_w = out->dims[2];
    if (out->dims[3] != p->out_c || out->dims[0] != in->dims[0] || p->out_c % p->in_c != 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "DEPTHWISE_CONV_2D shapes do not match", opi, -1, 0);
    p->depth_mult = p->out_c / p->in_c;
    if ((s = fm_check_bias(it, opi, op, bias, p->out_c)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    padding = fb_i8(&fb, op->opts, 0, 0);
    p->stride_w = fb_i32(&fb, op->opts, 1, 0);
    p->stride_h = fb_i32(&fb, op->opts, 2, 0);
    act = fb_i8(&fb, op->opts, 4, 0);
    p->dil_w = fb_i32(&fb, op->opts, 5, 1);
    p->dil_h = fb_i32(&fb, op->opts, 6, 1);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad DEPTHWISE_CONV_2D options", opi, -1, 0);
    if ((s = fm_window(it, opi, padding, p->in_h, p->k_h, p->stride_h, p->dil_h, p->out_h, &p->pad_h)) != FM_OK) return s;
    if ((s = fm_window(it, opi, padding, p->in_w, p->k_w, p->stride_w, p->dil_w, p->out_w, &p->pad_w)) != FM_OK) return s;
    if ((s = fm_activation_range(it, opi, act, out, &p->out.min, &p->out.max)) != FM_OK) return s;
    p->in_off = -in->zero_point;
    p->out.off = out->zero_point;
    s = fm_conv_multipliers(it, opi, in, f->num_scales ? f : fd, out, p->out_c, 0, &p->mult, &p->shift);
    if (s) return s;
    if (fd->flags & FM_T_SPARSE) op->scratch_bytes = 4u * (uint32_t)p->out_c;
    op->units = (uint32_t)in->dims[0] * (uint32_t)p->out_h;
    return FM_OK;
}

static int8_t finish(const fm_conv_params *p, int32_t acc, int32_t oc)
{
    return fm_requant_s8(acc, &p->out, p->shift[oc], p->mult[oc]);
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_conv_params *p = &op->p.conv;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    const fm_tensor *w = fm_root(it, op->in[1]);
    const int8_t *filt = (const int8_t *)w->cdata;
    const int32_t *bias = op->num_in > 2 && op->in[2] >= 0 ? (const int32_t *)(const void *)fm_data(it, op->in[2]) : NULL;
    int8_t *out = (int8_t *)fm_data(it, op->out);
    int32_t *acc_row = op->scratch_bytes ? (int32_t *)(void *)(it->arena + op->scratch_off) : NULL;
    const int32_t in_off = p->in_off, dm = p->depth_mult, oc_n = p->out_c;
    const fm_count kh = (fm_count)p->k_h, kw = (fm_count)p->k_w;
    const ptrdiff_t x_step = (ptrdiff_t)p->dil_w * p->in_c, y_step = (ptrdiff_t)p->dil_h * p->in_w * p->in_c;
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t n = (int32_t)(u / (uint32_t)p->out_h), oy = (int32_t)(u % (uint32_t)p->out_h);
        const int8_t *img = in + n * p->in_h * p->in_w * p->in_c;
        int8_t *o = out + ((int32_t)u * p->out_w) * oc_n;
        const int32_t iy0 = oy * p->stride_h - p->pad_h;
        int32_t ox;
        for (ox = 0; ox < p->out_w; ox++) {
            const int32_t ix0 = ox * p->stride_w - p->pad_w;
            int32_t oc, ky, kx;
            if (acc_row) {
                for (oc = 0; oc < oc_n; oc++) acc_row[oc] = 0;
                for (ky = 0; ky < p->k_h; ky++) {
                    const int32_t iy = iy0 + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->k_w; kx++) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        const int8_t *x, *v = (const int8_t *)w->cdata;
                        uint32_t r, j, e;
                        if (ix < 0 || ix >= p->in_w) continue;
                        x = img + (iy * p->in_w + ix) * p->in_c;
                        r = (uint32_t)(ky * p->k_w + kx);
                        e = fm_seg(w, r + 1);
                        for (j = fm_seg(w, r); j < e; j++) {
                            const uint32_t c = w->idx_w == 1 ? w->idx[j]
                                             : w->idx_w == 2 ? ((const uint16_t *)(const void *)w->idx)[j]
                                             : ((const uint32_t *)(const void *)w->idx)[j];
                            acc_row[c] += FM_MAC16(v[j], x[dm == 1 ? (int32_t)c : (int32_t)c / dm] + in_off);
                        }
                    }
                }
                for (oc = 0; oc < oc_n; oc++)
                    o[ox * oc_n + oc] = finish(p, FM_WRAP_ADD(acc_row[oc], bias ? bias[oc] : 0), oc);
                continue;
            }
            oc = 0;
            if (dm == 1 && p->dil_h == 1 && p->dil_w == 1) {
                /* one filter per channel: 4 channels at a time, each loaded tap used by 4
                 * accumulators, pointer steps only, over the taps inside the image (padding adds
                 * w * (zp + in_off) = 0); the channels left over (out_c not a multiple of 4) take
                 * the general loop below */
                const fm_count y0 = (fm_count)(iy0 < 0 ? -iy0 : 0), x0 = (fm_count)(ix0 < 0 ? -ix0 : 0);
                const fm_count y1 = (fm_count)(p->in_h - iy0 < kh ? p->in_h - iy0 : kh);
                const fm_count x1 = (fm_count)(p->in_w - ix0 < kw ? p->in_w - ix0 : kw);
                const ptrdiff_t w_skip = (ptrdiff_t)(kw - (x1 - x0)) * oc_n;   /* taps left out per row */
                const int8_t *xw = img + ((iy0 + y0) * p->in_w + ix0 + x0) * p->in_c;
                const int8_t *w0 = filt + ((ptrdiff_t)y0 * kw + x0) * oc_n;
#if FM_MAC_DSP
                if (oc_n >= 4 && y1 > y0 && x1 > x0) {
                    /* every channel: out_c not a multiple of 4, the last four too, overlapping
                     * the group before (those values computed and written twice, the same) */
                    oc = oc_n & ~(int32_t)3;
                    fm_dw_pixel_dsp(p, xw, w0, bias, (uint16_t)(y1 - y0), (uint16_t)(x1 - x0), y_step, x_step,
                                    (ptrdiff_t)kw * oc_n, 0, oc, o + ox * oc_n);
                    if (oc < oc_n) {
                        fm_dw_pixel_dsp(p, xw, w0, bias, (uint16_t)(y1 - y0), (uint16_t)(x1 - x0), y_step, x_step,
                                        (ptrdiff_t)kw * oc_n, oc_n - 4, oc_n, o + ox * oc_n);
                        oc = oc_n;
                    }
                }
#endif
                for (; oc + 4 <= oc_n; oc += 4) {
                    int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
                    const int8_t *wp = w0 + oc, *xr = xw + oc;
                    fm_count y, x;
                    for (y = y0; y < y1; y++, xr += y_step, wp += w_skip) {
                        const int8_t *xp = xr;
                        for (x = x0; x < x1; x++, xp += x_step, wp += oc_n) {
                            a0 += FM_MAC16(wp[0], xp[0] + in_off);
                            a1 += FM_MAC16(wp[1], xp[1] + in_off);
                            a2 += FM_MAC16(wp[2], xp[2] + in_off);
                            a3 += FM_MAC16(wp[3], xp[3] + in_off);
                        }
                    }
                    if (bias) {
                        a0 = FM_WRAP_ADD(a0, bias[oc]);
                        a1 = FM_WRAP_ADD(a1, bias[oc + 1]);
                        a2 = FM_WRAP_ADD(a2, bias[oc + 2]);
                        a3 = FM_WRAP_ADD(a3, bias[oc + 3]);
                    }
                    o[ox * oc_n + oc] = finish(p, a0, oc);
                    o[ox * oc_n + oc + 1] = finish(p, a1, oc + 1);
                    o[ox * oc_n + oc + 2] = finish(p, a2, oc + 2);
                    o[ox * oc_n + oc + 3] = finish(p, a3, oc + 3);
                }
            }
            for (; oc < oc_n; oc++) {
                int32_t acc = 0;
                const int32_t ic = oc / dm;
                for (ky = 0; ky < p->k_h; ky++) {
                    const int32_t iy = iy0 + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->k_w; kx++) {
                        const int32_t ix = ix0 + kx * p->dil_w;
                        if (ix < 0 || ix >= p->in_w) continue;
                        acc += (int32_t)filt[(ky * p->k_w + kx) * oc_n + oc] *
                               ((int32_t)img[(iy * p->in_w + ix) * p->in_c + ic] + in_off);
                    }
                }
                if (bias) acc = FM_WRAP_ADD(acc, bias[oc]);
                o[ox * oc_n + oc] = finish(p, acc, oc);
            }
        }
    }
}

const fm_kernel fm_kernel_depthwise_conv_2d = {FM_OP_DEPTHWISE_CONV_2D, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(conv)};
