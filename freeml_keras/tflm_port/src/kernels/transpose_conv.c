/* TRANSPOSE_CONV, int8 with per-channel quantization and dense weights (what the TFLite
 * converter makes of a Keras Conv2DTranspose). TFLite Micro scatters each input pixel into an
 * int32 image of the output; here each output pixel gathers the input pixels and taps that
 * reach it (output y = input y * stride - pad + filter y), the same integer sums (wrap-around
 * arithmetic: any order gives the same bits), so that one unit is one output pixel and no
 * scratch image is needed. Inputs: output shape, weights [out_c, k_h, k_w, in_c], input,
 * optional bias. */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

enum { TC_SHAPE = 0, TC_W = 1, TC_IN = 2, TC_BIAS = 3 };

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_conv_params *p = &op->p.conv;
    const fm_tensor *in, *f, *fd, *out, *bias = NULL;
    const int32_t *shape;
    fm_fb fb;
    int32_t padding, act, d;
    fm_status s;
    if (op->num_in < 3) return fm_fail(it, FM_ERR_FORMAT, "TRANSPOSE_CONV needs output shape, weights and input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[TC_IN], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect_weights(it, opi, op->in[TC_W], &f, &fd)) != FM_OK) return s;
    if (fd->flags & FM_T_SPARSE)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "TRANSPOSE_CONV with sparse weights", opi, op->in[TC_W], 0);
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (op->num_in > 3 && op->in[TC_BIAS] >= 0) {
        if ((s = fm_expect(it, opi, op->in[TC_BIAS], FM_INT32, &bias)) != FM_OK) return s;
        if (!(bias->flags & FM_T_CONST)) return fm_fail(it, FM_ERR_UNSUPPORTED, "bias must be constant", opi, op->in[TC_BIAS], 0);
    }
    if (in->ndim != 4 || f->ndim != 4 || out->ndim != 4)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "TRANSPOSE_CONV tensors must be 4-D", opi, -1, 0);
    if ((s = fm_const_i32(it, opi, op->in[TC_SHAPE], 4, &shape)) != FM_OK) return s;
    for (d = 0; d < 4; d++)
        if (shape[d] != out->dims[d])
            return fm_fail(it, FM_ERR_FORMAT, "TRANSPOSE_CONV output shape differs from the output", opi, op->in[TC_SHAPE], d);
    p->in_h = in->dims[1]; p->in_w = in->dims[2]; p->in_c = in->dims[3];
    p->out_c = f->dims[0]; p->k_h = f->dims[1]; p->k_w = f->dims[2]; p->k_c = f->dims[3];
    p->out_h = out->dims[1]; p->out_w = out->dims[2];
    if (p->k_c != p->in_c || out->dims[3] != p->out_c || out->dims[0] != in->dims[0])
        return fm_fail(it, FM_ERR_FORMAT, "TRANSPOSE_CONV shapes do not match", opi, -1, 0);
    if ((s = fm_check_bias(it, opi, op, bias, p->out_c)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    padding = fb_i8(&fb, op->opts, 0, 0);                 /* TransposeConvOptions */
    p->stride_w = fb_i32(&fb, op->opts, 1, 0);
    p->stride_h = fb_i32(&fb, op->opts, 2, 0);
    act = fb_i8(&fb, op->opts, 3, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad TRANSPOSE_CONV options", opi, -1, 0);
    /* TFLite Micro's padding: that of a convolution from the output's size to the input's */
    if ((s = fm_window(it, opi, padding, p->out_h, p->k_h, p->stride_h, 1, p->in_h, &p->pad_h)) != FM_OK) return s;
    if ((s = fm_window(it, opi, padding, p->out_w, p->k_w, p->stride_w, 1, p->in_w, &p->pad_w)) != FM_OK) return s;
    if ((s = fm_activation_range(it, opi, act, out, &p->out.min, &p->out.max)) != FM_OK) return s;
    p->in_off = -in->zero_point;
    p->out.off = out->zero_point;
    s = fm_conv_multipliers(it, opi, in, f->num_scales ? f : fd, out, p->out_c, 0, &p->mult, &p->shift);
    if (s) return s;
    p->acc0 = bias ? (int32_t *)(uintptr_t)bias->cdata : NULL;
    op->units = (uint32_t)in->dims[0] * (uint32_t)p->out_h * (uint32_t)p->out_w;
    return FM_OK;
}

/* The input coordinate tap k reaches output coordinate o from (o + pad - k) / stride, -1 when
 * none does. */
static int32_t source(int32_t o, int32_t pad, int32_t k, int32_t stride, int32_t size)
{
    const int32_t v = o + pad - k;
    if (v < 0 || v % stride) return -1;
    return v / stride < size ? v / stride : -1;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_conv_params *p = &op->p.conv;
    const int8_t *x = (const int8_t *)fm_data(it, op->in[TC_IN]);
    const int8_t *w = (const int8_t *)fm_data(it, op->in[TC_W]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t ox = (int32_t)(u % (uint32_t)p->out_w), rest = (int32_t)(u / (uint32_t)p->out_w);
        const int32_t oy = rest % p->out_h, n = rest / p->out_h;
        int32_t oc;
        for (oc = 0; oc < p->out_c; oc++) {
            int32_t acc = p->acc0 ? p->acc0[oc] : 0, ky, kx, c;
            for (ky = 0; ky < p->k_h; ky++) {
                const int32_t iy = source(oy, p->pad_h, ky, p->stride_h, p->in_h);
                if (iy < 0) continue;
                for (kx = 0; kx < p->k_w; kx++) {
                    const int32_t ix = source(ox, p->pad_w, kx, p->stride_w, p->in_w);
                    const int8_t *xi, *wi;
                    if (ix < 0) continue;
                    xi = x + ((n * p->in_h + iy) * p->in_w + ix) * p->in_c;
                    wi = w + ((oc * p->k_h + ky) * p->k_w + kx) * p->k_c;
                    for (c = 0; c < p->in_c; c++) acc = FM_WRAP_ADD(acc, FM_MAC16(wi[c], (int32_t)xi[c] + p->in_off));
                }
            }
            out[(int32_t)u * p->out_c + oc] = fm_requant_s8(acc, &p->out, (int16_t)p->shift[oc], p->mult[oc]);
        }
    }
}

const fm_kernel fm_kernel_transpose_conv = {FM_OP_TRANSPOSE_CONV, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(conv)};
