/* FULLY_CONNECTED, int8, per-tensor or per-channel; dense weights or CSR weights in place. */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"
#include "freeml/fm_mac_dsp.h"
#ifdef FM_TARGET_DOT
#include "fm_dot.h"   /* the target's int8 MAC loop (tflm_port/targets): SMLAD, MACS */
#endif

/* CSR weights: sum of w[j] * (x[idx[j]] + in_off) over a channel's row; on the MSP430 in the
 * hardware multiplier's accumulator (MACS = w, OP2 = x + in_off: both fit 16 bits). */
#if defined(FM_TARGET_DOT) && defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
#include "hwmult.h"
#define FM_FC_CSR_DOT(IX, T)                                                                    \
    do {                                                                                        \
        const int8_t *vp = filt + j, *const ve = filt + e;                                      \
        const T *ip = (IX) + j;                                                                 \
        FM_RESLO = 0;                                                                           \
        FM_RESHI = 0;                                                                           \
        for (; vp < ve; vp++) {                                                                 \
            FM_MACS = (uint16_t)(int16_t)*vp;                                                   \
            FM_OP2 = (uint16_t)(int16_t)(x[*ip++] + in_off);                                    \
        }                                                                                       \
        acc = (int32_t)(((uint32_t)FM_RESHI << 16) | FM_RESLO);                                 \
        j = e;                                                                                  \
    } while (0)
#else
#define FM_FC_CSR_DOT(IX, T) \
    do { for (; j < e; j++) acc += FM_MAC16(filt[j], x[(IX)[j]] + in_off); } while (0)
#endif

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_fc_params *p = &op->p.fc;
    const fm_tensor *in, *f, *fd, *out, *bias;
    fm_fb fb;
    int32_t act;
    fm_status s;
    if ((s = fm_weighted_operands(it, opi, op, &in, &f, &fd, &out, &bias)) != FM_OK) return s;
    if ((fd->flags & FM_T_SPARSE) ? !((fd->idx_w == 1 && FM_FC_SPARSE_8) || (fd->idx_w == 2 && FM_FC_SPARSE_16) ||
                                      (fd->idx_w == 4 && FM_FC_SPARSE_32))
                                  : !FM_FC_DENSE)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "FULLY_CONNECTED: this build has no kernel for this weight layout "
                       "(value: CSR index bytes, 0 dense; see the kernel configuration)", opi, op->in[1],
                       (fd->flags & FM_T_SPARSE) ? fd->idx_w : 0);
    if (f->ndim != 2) return fm_fail(it, FM_ERR_UNSUPPORTED, "FULLY_CONNECTED weights must be 2-D", opi, op->in[1], 0);
    p->out_c = f->dims[0];
    p->depth = f->dims[1];
    if (fm_elements(in) % p->depth != 0)
        return fm_fail(it, FM_ERR_FORMAT, "FULLY_CONNECTED input size is not a multiple of the weights' depth", opi, -1, 0);
    p->batches = fm_elements(in) / p->depth;
    if (fm_elements(out) != p->batches * p->out_c || out->dims[out->ndim - 1] != p->out_c)
        return fm_fail(it, FM_ERR_FORMAT, "FULLY_CONNECTED output shape", opi, op->out, 0);
    if ((s = fm_check_bias(it, opi, op, bias, p->out_c)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    act = fb_i8(&fb, op->opts, 0, 0);
    if (fb_i8(&fb, op->opts, 1, 0) != 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "shuffled FULLY_CONNECTED weights", opi, -1, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad FULLY_CONNECTED options", opi, -1, 0);
    if ((s = fm_activation_range(it, opi, act, out, &p->out.min, &p->out.max)) != FM_OK) return s;
    p->in_off = -in->zero_point;
    p->out.off = out->zero_point;
    {
        const fm_tensor *fq = f->num_scales ? f : fd;
        s = fm_conv_multipliers(it, opi, in, fq, out, p->out_c, (uint8_t)(fq->num_scales <= 1), &p->mult, &p->shift);
        if (s) return s;
    }
    op->units = (uint32_t)p->batches * (uint32_t)p->out_c;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_fc_params *p = &op->p.fc;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    const fm_tensor *w = fm_root(it, op->in[1]);
    const int8_t *filt = (const int8_t *)w->cdata;
    const int32_t *bias = op->num_in > 2 && op->in[2] >= 0 ? (const int32_t *)(const void *)fm_data(it, op->in[2]) : NULL;
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const int32_t depth = p->depth, in_off = p->in_off;
    const int sparse = (w->flags & FM_T_SPARSE) != 0;
    /* batch row and output channel of unit `begin`, then stepped: no division or index product
     * per output value (on 16-bit targets each is a long helper call) */
    int32_t oc = (int32_t)begin;
    const int8_t *x = in;
    for (; oc >= p->out_c; oc -= p->out_c) x += depth;        /* (a step resumes: no division) */
#if FM_FC_DENSE
    const int8_t *k = filt + oc * depth;              /* dense weights of channel oc */
#endif
    uint32_t u;
#if FM_MAC_DSP && FM_FC_DENSE
    if (!sparse && depth >= 4 && depth <= 0xFFFF) {
        /* one batch row at a time, four output channels at once */
        for (u = begin; u < end;) {
            const int32_t stop = (int32_t)((end - u) < (uint32_t)(p->out_c - oc) ? (int32_t)(end - u) + oc : p->out_c);
            fm_fc_row_dsp(p, x, filt, bias, oc, stop, out + u);
            u += (uint32_t)(stop - oc);
            if (stop == p->out_c) {
                oc = 0;
                x += depth;
            }
        }
        return;
    }
#endif
#if defined(FM_PX_HWMULT) && FM_FC_DENSE
    if (!sparse && depth <= FM_PX_MAX) {
        /* MSP430: a short batch row's output channels [oc, stop) in one assembly call */
        fm_px_hwmult_t px;
        px.out = &p->out; px.row_skip = 0; px.row_len = (uint16_t)depth; px.rows = 1; px.x_off = (int16_t)in_off;
        for (u = begin; u < end;) {
            const int32_t stop = (int32_t)((end - u) < (uint32_t)(p->out_c - oc) ? (int32_t)(end - u) + oc : p->out_c);
            px.acc0 = bias ? bias + oc : NULL;
            px.mult = p->mult + oc;
            px.shift = p->shift + oc;
            fm_px_hwmult(x, k, &px, out + u, (uint16_t)(stop - oc));
            u += (uint32_t)(stop - oc);
            if (stop == p->out_c) {
                oc = 0;
                x += depth;
                k = filt;
            }
        }
        return;
    }
#endif
    for (u = begin; u < end; u++) {
        int32_t acc = 0;
        if (sparse) {
            uint32_t j = fm_seg(w, (uint32_t)oc), e = fm_seg(w, (uint32_t)oc + 1);
            /* one loop per index width the build has (prepare refused the others) */
#if FM_FC_SPARSE_8
            if (w->idx_w == 1) {
                const uint8_t *ix = w->idx;
                FM_FC_CSR_DOT(ix, uint8_t);
            }
#endif
#if FM_FC_SPARSE_16
            if (w->idx_w == 2) {
                const uint16_t *ix = (const uint16_t *)(const void *)w->idx;
                FM_FC_CSR_DOT(ix, uint16_t);
            }
#endif
#if FM_FC_SPARSE_32
            if (w->idx_w == 4) {
                const uint32_t *ix = (const uint32_t *)(const void *)w->idx;
                FM_FC_CSR_DOT(ix, uint32_t);
            }
#endif
            (void)j; (void)e;
        } else {
#if FM_FC_DENSE
#ifdef FM_TARGET_DOT
            if (FM_TARGET_DOT_ALWAYS || (depth >= FM_TARGET_DOT_MIN && depth < 32768)) {
                acc = fm_dot_s8(x, k, (uint16_t)depth, (int16_t)in_off, acc);
            } else
#endif
            {
                int32_t d;
                for (d = 0; d < depth; d++) acc += (int32_t)k[d] * ((int32_t)x[d] + in_off);
            }
#endif
        }
        if (bias) acc = FM_WRAP_ADD(acc, bias[oc]);
        out[u] = fm_requant_s8(acc, &p->out, p->shift[oc], p->mult[oc]);
#if FM_FC_DENSE
        k += depth;
#endif
        if (++oc == p->out_c) {
            oc = 0;
            x += depth;
#if FM_FC_DENSE
            k = filt;
#endif
        }
    }
}

const fm_kernel fm_kernel_fully_connected = {FM_OP_FULLY_CONNECTED, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(fc)};
