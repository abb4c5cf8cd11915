/* MEAN over any axes of an int8 tensor of up to 4 dimensions (GlobalAveragePooling). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_mean_params *p = &op->p.mean;
    const fm_tensor *in, *out, *axis;
    const int32_t *ax;
    int32_t i, n, lead, count = 1, outputs = 1;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "MEAN needs input and axes", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->in[1], FM_INT32, &axis)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (!(axis->flags & FM_T_CONST)) return fm_fail(it, FM_ERR_UNSUPPORTED, "MEAN axes must be constant", opi, op->in[1], 0);
    if (in->ndim > 4 || in->ndim < 1) return fm_fail(it, FM_ERR_UNSUPPORTED, "MEAN input must have 1 to 4 dimensions", opi, -1, 0);
    lead = 4 - in->ndim;
    for (i = 0; i < 4; i++) {
        p->dims[i] = i < lead ? 1 : in->dims[i - lead];
        p->reduce[i] = 0;
    }
    ax = (const int32_t *)(const void *)axis->cdata;
    n = fm_elements(axis);
    for (i = 0; i < n; i++) {
        int32_t a = ax[i] < 0 ? ax[i] + in->ndim : ax[i];
        if (a < 0 || a >= in->ndim) return fm_fail(it, FM_ERR_FORMAT, "MEAN axis out of range", opi, -1, ax[i]);
        p->reduce[a + lead] = 1;
    }
    for (i = 0; i < 4; i++) {
        if (p->reduce[i]) count *= p->dims[i]; else outputs *= p->dims[i];
    }
    if (fm_elements(out) != outputs) return fm_fail(it, FM_ERR_FORMAT, "MEAN output size", opi, op->out, outputs);
    if (count > 65535) return fm_fail(it, FM_ERR_UNSUPPORTED, "MEAN over too many elements", opi, -1, count);
    {
        int32_t mult = 0, shift = 127;
#if FM_PREPARE_FLOAT
        if (!(in->scale > 0) || !(out->scale > 0) ||
            !fm_quantize_multiplier((double)in->scale / (double)out->scale, &mult, &shift))
            shift = 127;                                 /* refused below */
#endif
        p->mult = fm_pre_value(it, mult);
        p->shift = fm_pre_value(it, shift);
        if (p->mult < 0 || p->shift > 31 || p->shift < -31)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "MEAN scales out of range", opi, -1, 0);
    }
    fm_mean_multiplier(&p->mult, &p->shift, count);
    p->count = count;
    p->outputs = outputs;
    p->in_zp = in->zero_point;
    p->out_zp = out->zero_point;
    op->units = (uint32_t)outputs;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_mean_params *p = &op->p.mean;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        int32_t lo[4], hi[4], i0, i1, i2, i3, rest = (int32_t)u, d, sum = 0, v;
        /* coordinates of the kept dimensions from the output index (last dimension fastest) */
        for (d = 3; d >= 0; d--) {
            if (p->reduce[d]) { lo[d] = 0; hi[d] = p->dims[d]; }
            else { lo[d] = rest % p->dims[d]; hi[d] = lo[d] + 1; rest /= p->dims[d]; }
        }
        for (i0 = lo[0]; i0 < hi[0]; i0++)
            for (i1 = lo[1]; i1 < hi[1]; i1++)
                for (i2 = lo[2]; i2 < hi[2]; i2++)
                    for (i3 = lo[3]; i3 < hi[3]; i3++)
                        sum += in[((i0 * p->dims[1] + i1) * p->dims[2] + i2) * p->dims[3] + i3];
        v = fm_mul_by_qm(sum - p->in_zp * p->count, p->mult, p->shift) + p->out_zp;
        if (v < -128) v = -128;
        if (v > 127) v = 127;
        out[u] = (int8_t)v;
    }
}

const fm_kernel fm_kernel_mean = {FM_OP_MEAN, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(mean)};
