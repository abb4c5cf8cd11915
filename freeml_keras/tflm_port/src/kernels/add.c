/* ADD and SUB, int8 with rescaling of both inputs (20-bit headroom) and 4-D broadcasting. */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

/* One of the three rescalings: m in (0, 1) as multiplier and non-positive shift. */
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
        return fm_fail(it, FM_ERR_UNSUPPORTED, "ADD / SUB scales out of range", opi, -1, 0);
    return FM_OK;
}

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_add_params *p = &op->p.add;
    const fm_tensor *a, *b, *out;
    FM_PREPARE_REAL m1 = 0, m2 = 0, m3 = 0;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "ADD / SUB needs two inputs", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &a)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->in[1], FM_INT8, &b)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if ((s = fm_broadcast(it, opi, a, b, out, p->out_dims, p->str1, p->str2)) != FM_OK) return s;
    p->count = fm_elements(out);
    if ((s = fm_options_activation(it, opi, op, out, &p->act_min, &p->act_max)) != FM_OK) return s;
    p->in1_off = -a->zero_point;
    p->in2_off = -b->zero_point;
    p->out_off = out->zero_point;
    p->left_shift = 20;
#if FM_PREPARE_FLOAT
    if (op->code == FM_OP_ADD) {
        const double twice = 2.0 * (double)(a->scale > b->scale ? a->scale : b->scale);
        m1 = (double)a->scale / twice;
        m2 = (double)b->scale / twice;
        m3 = twice / ((double)((int32_t)1 << 20) * (double)out->scale);
    } else {
        /* TFLite Micro's SUB divides in float, then widens */
        volatile float twice = 2.0f * (a->scale > b->scale ? a->scale : b->scale), f;
        f = a->scale / twice;
        m1 = (double)f;
        f = b->scale / twice;
        m2 = (double)f;
        f = (float)((int32_t)1 << 20) * out->scale;
        f = twice / f;
        m3 = (double)f;
    }
#endif
    if ((s = multiplier(it, opi, m1, &p->in1_mult, &p->in1_shift)) != FM_OK) return s;
    if ((s = multiplier(it, opi, m2, &p->in2_mult, &p->in2_shift)) != FM_OK) return s;
    if ((s = multiplier(it, opi, m3, &p->out_mult, &p->out_shift)) != FM_OK) return s;
    op->units = (uint32_t)p->count;
    return FM_OK;
}

/* One input rescaled to the common 20-bit-headroom scale. */
static int32_t scaled(int32_t v, int32_t off, int32_t mult, int32_t shift)
{
    return fm_mul_by_qm_fast((int32_t)(((uint32_t)(v + off)) << 20), mult, shift);
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_add_params *p = &op->p.add;
    const int8_t *a = (const int8_t *)fm_data(it, op->in[0]);
    const int8_t *b = (const int8_t *)fm_data(it, op->in[1]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    /* same shapes: the element index is the operands' index */
    const uint8_t flat = fm_elements(&it->tensors[op->in[0]]) == p->count &&
                         fm_elements(&it->tensors[op->in[1]]) == p->count;
    const uint8_t sub = op->code == FM_OP_SUB;
    fm_bcast_pos pos;
    uint32_t u;
    if (flat) {
        pos.ia = pos.ib = (int32_t)begin;
        pos.c[3] = 0;
    } else {
        fm_bcast_start(p, begin, &pos);
    }
    for (u = begin; u < end;) {            /* runs along the innermost output dimension */
        const uint32_t n = flat ? end - u : fm_bcast_run(p, &pos, end - u);
        const int32_t s1 = flat ? 1 : p->str1[3], s2 = flat ? 1 : p->str2[3];
        const int8_t *xa = a + pos.ia, *xb = b + pos.ib;
        int8_t *o = out + u;
        uint32_t k;
        for (k = 0; k < n; k++, xa += s1, xb += s2) {
            const int32_t x = scaled(*xa, p->in1_off, p->in1_mult, p->in1_shift);
            const int32_t y = scaled(*xb, p->in2_off, p->in2_mult, p->in2_shift);
            int32_t v = fm_mul_by_qm_fast(sub ? x - y : x + y, p->out_mult, p->out_shift) + p->out_off;
            if (v < p->act_min) v = p->act_min;
            if (v > p->act_max) v = p->act_max;
            o[k] = (int8_t)v;
        }
        if (!flat) fm_bcast_skip(p, &pos, n);
        u += n;
    }
}

const fm_kernel fm_kernel_add = {FM_OP_ADD, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(add)};
const fm_kernel fm_kernel_sub = {FM_OP_SUB, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(add)};
