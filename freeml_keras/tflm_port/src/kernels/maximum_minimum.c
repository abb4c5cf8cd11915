/* MAXIMUM and MINIMUM of int8 tensors with 4-D broadcasting: on the raw values, without
 * rescaling (as TFLite Micro's reference does). */
#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_add_params *p = &op->p.add;
    const fm_tensor *a, *b, *out;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "MAXIMUM / MINIMUM needs two inputs", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &a)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->in[1], FM_INT8, &b)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if ((s = fm_broadcast(it, opi, a, b, out, p->out_dims, p->str1, p->str2)) != FM_OK) return s;
    p->count = fm_elements(out);
    op->units = (uint32_t)p->count;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_add_params *p = &op->p.add;
    const int8_t *a = (const int8_t *)fm_data(it, op->in[0]);
    const int8_t *b = (const int8_t *)fm_data(it, op->in[1]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const uint8_t max = op->code == FM_OP_MAXIMUM;
    fm_bcast_pos pos;
    uint32_t u;
    if (fm_elements(&it->tensors[op->in[0]]) == p->count && fm_elements(&it->tensors[op->in[1]]) == p->count) {
        for (u = begin; u < end; u++)       /* same shapes */
            out[u] = max ? (a[u] > b[u] ? a[u] : b[u]) : (a[u] < b[u] ? a[u] : b[u]);
        return;
    }
    fm_bcast_start(p, begin, &pos);
    for (u = begin; u < end;) {            /* runs along the innermost output dimension */
        const uint32_t n = fm_bcast_run(p, &pos, end - u);
        const int32_t s1 = p->str1[3], s2 = p->str2[3];
        const int8_t *x = a + pos.ia, *y = b + pos.ib;
        int8_t *o = out + u;
        uint32_t k;
        if (s1 == 1 && s2 == 1 && max)     /* (a select each: no branch on the data; unit */
            for (k = 0; k < n; k++) o[k] = x[k] > y[k] ? x[k] : y[k];       /* strides vectorize) */
        else if (s1 == 1 && s2 == 1)
            for (k = 0; k < n; k++) o[k] = x[k] < y[k] ? x[k] : y[k];
        else if (max)
            for (k = 0; k < n; k++, x += s1, y += s2) o[k] = *x > *y ? *x : *y;
        else
            for (k = 0; k < n; k++, x += s1, y += s2) o[k] = *x < *y ? *x : *y;
        fm_bcast_skip(p, &pos, n);
        u += n;
    }
}

const fm_kernel fm_kernel_maximum = {FM_OP_MAXIMUM, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(add)};
const fm_kernel fm_kernel_minimum = {FM_OP_MINIMUM, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(add)};
