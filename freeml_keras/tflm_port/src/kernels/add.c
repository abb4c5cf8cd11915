/* ADD, int8 with rescaling of both inputs (20-bit headroom) and 4-D broadcasting. */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

/* One of ADD's three rescalings: m in (0, 1) as multiplier and non-positive shift. */
static fm_status multiplier(fm_interp *it, uint16_t opi, FM_PREPARE_REAL m, int32_t *q, int32_t *shift)
{
    int32_t mq = 0, sh = 0;
#if FM_PREPARE_FLOAT
    if (!(m > 0) || m >= 1.0 || !fm_quantize_multiplier(m, &mq, &sh)) sh = 1;   /* refused below */
#else
    (void)m;
#endif
    *q = fm_pre_value(it, mq);
    *shift = fm_pre_value(it, sh);
    if (*shift > 0 || *q <= 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "ADD scales out of range", opi, -1, 0);
    return FM_OK;
}

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_add_params *p = &op->p.add;
    const fm_tensor *a, *b, *out;
    fm_fb fb;
    int32_t act, d, la, lb, lo, sa = 1, sb = 1;
    FM_PREPARE_REAL m1 = 0, m2 = 0, m3 = 0;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "ADD needs two inputs", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &a)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->in[1], FM_INT8, &b)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (a->ndim > 4 || b->ndim > 4 || out->ndim > 4) return fm_fail(it, FM_ERR_UNSUPPORTED, "ADD of more than 4 dimensions", opi, -1, 0);
    la = 4 - a->ndim; lb = 4 - b->ndim; lo = 4 - out->ndim;
    for (d = 3; d >= 0; d--) {
        const int32_t da = d < la ? 1 : a->dims[d - la], db = d < lb ? 1 : b->dims[d - lb];
        const int32_t dout = d < lo ? 1 : out->dims[d - lo];
        if ((da != dout && da != 1) || (db != dout && db != 1) || (da != dout && db != dout))
            return fm_fail(it, FM_ERR_FORMAT, "ADD shapes do not broadcast to the output", opi, -1, d);
        p->out_dims[d] = dout;
        p->str1[d] = da == 1 ? 0 : sa;
        p->str2[d] = db == 1 ? 0 : sb;
        sa *= da;
        sb *= db;
    }
    p->count = fm_elements(out);
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    act = fb_i8(&fb, op->opts, 0, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad ADD options", opi, -1, 0);
    if ((s = fm_activation_range(it, opi, act, out, &p->act_min, &p->act_max)) != FM_OK) return s;
    p->in1_off = -a->zero_point;
    p->in2_off = -b->zero_point;
    p->out_off = out->zero_point;
    p->left_shift = 20;
#if FM_PREPARE_FLOAT
    const double twice = 2.0 * (double)(a->scale > b->scale ? a->scale : b->scale);
    m1 = (double)a->scale / twice;
    m2 = (double)b->scale / twice;
    m3 = twice / ((double)((int32_t)1 << 20) * (double)out->scale);
#endif
    if ((s = multiplier(it, opi, m1, &p->in1_mult, &p->in1_shift)) != FM_OK) return s;
    if ((s = multiplier(it, opi, m2, &p->in2_mult, &p->in2_shift)) != FM_OK) return s;
    if ((s = multiplier(it, opi, m3, &p->out_mult, &p->out_shift)) != FM_OK) return s;
    op->units = (uint32_t)p->count;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_add_params *p = &op->p.add;
    const int8_t *a = (const int8_t *)fm_data(it, op->in[0]);
    const int8_t *b = (const int8_t *)fm_data(it, op->in[1]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        int32_t rest = (int32_t)u, ia = 0, ib = 0, d, x, y, v;
        for (d = 3; d >= 0; d--) {
            const int32_t c = rest % p->out_dims[d];
            rest /= p->out_dims[d];
            ia += c * p->str1[d];
            ib += c * p->str2[d];
        }
        x = fm_mul_by_qm((int32_t)(((uint32_t)((int32_t)a[ia] + p->in1_off)) << p->left_shift), p->in1_mult, p->in1_shift);
        y = fm_mul_by_qm((int32_t)(((uint32_t)((int32_t)b[ib] + p->in2_off)) << p->left_shift), p->in2_mult, p->in2_shift);
        v = fm_mul_by_qm(x + y, p->out_mult, p->out_shift) + p->out_off;
        if (v < p->act_min) v = p->act_min;
        if (v > p->act_max) v = p->act_max;
        out[u] = (int8_t)v;
    }
}

const fm_kernel fm_kernel_add = {FM_OP_ADD, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval)};
