/* MUL, int8 with one rescaling of the product and 4-D broadcasting (TFLite Micro's reference). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_add_params *p = &op->p.add;
    const fm_tensor *a, *b, *out;
    int32_t q = 0, sh = 0;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "MUL needs two inputs", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &a)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->in[1], FM_INT8, &b)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if ((s = fm_broadcast(it, opi, a, b, out, p->out_dims, p->str1, p->str2)) != FM_OK) return s;
    p->count = fm_elements(out);
    if ((s = fm_options_activation(it, opi, op, out, &p->act_min, &p->act_max)) != FM_OK) return s;
    p->in1_off = -a->zero_point;
    p->in2_off = -b->zero_point;
    p->out_off = out->zero_point;
#if FM_PREPARE_FLOAT
    if (!fm_quantize_multiplier((double)a->scale * (double)b->scale / (double)out->scale, &q, &sh))
        sh = 127;                                                         /* refused below */
#endif
    p->out_mult = fm_pre_value(it, q);
    p->out_shift = fm_pre_value(it, sh);
    if (p->out_shift > 30 || p->out_shift < -31 || p->out_mult < 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "MUL scales out of range", opi, -1, p->out_shift);
    op->units = (uint32_t)p->count;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_add_params *p = &op->p.add;
    const int8_t *a = (const int8_t *)fm_data(it, op->in[0]);
    const int8_t *b = (const int8_t *)fm_data(it, op->in[1]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const uint8_t flat = fm_elements(&it->tensors[op->in[0]]) == p->count &&
                         fm_elements(&it->tensors[op->in[1]]) == p->count;
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
        const int8_t *x = a + pos.ia, *y = b + pos.ib;
        int8_t *o = out + u;
        uint32_t k;
        for (k = 0; k < n; k++, x += s1, y += s2) {
            int32_t v = fm_mul_by_qm_fast(FM_MUL32((int32_t)*x + p->in1_off, (int32_t)*y + p->in2_off),
                                          p->out_mult, p->out_shift) + p->out_off;
            if (v < p->act_min) v = p->act_min;
            if (v > p->act_max) v = p->act_max;
            o[k] = (int8_t)v;
        }
        if (!flat) fm_bcast_skip(p, &pos, n);
        u += n;
    }
}

const fm_kernel fm_kernel_mul = {FM_OP_MUL, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(add)};
