/* TRANSPOSE (up to 4-D, any element type the runtime holds): a copy along a constant
 * permutation. A unit is one output row. */
#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_copy_params *p = &op->p.copy;
    const fm_tensor *in, *out;
    const int32_t *perm;
    int32_t d, k, lead, stride[4], seen = 0;
    fm_status s;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "TRANSPOSE needs an input and a permutation", opi, -1, 0);
    in = &it->tensors[op->in[0] < 0 ? op->out : op->in[0]];
    if ((s = fm_expect(it, opi, op->in[0], in->type, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, in->type, &out)) != FM_OK) return s;
    if (in->ndim > 4 || in->ndim != out->ndim || in->ndim < 1)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "TRANSPOSE of more than 4 dimensions or ranks differ", opi, op->out, in->ndim);
    if ((s = fm_const_i32(it, opi, op->in[1], in->ndim, &perm)) != FM_OK) return s;
    for (k = in->ndim - 1, d = 1; k >= 0; k--) {
        stride[k] = d;
        d *= in->dims[k];
    }
    lead = 4 - in->ndim;
    for (d = 0; d < 4; d++) {
        const int32_t j = d - lead;
        p->start[d] = 0;
        if (j < 0) {
            p->dims[d] = 1;
            p->step[d] = 0;
            continue;
        }
        k = perm[j];
        if (k < 0 || k >= in->ndim || (seen & (1 << k)) || out->dims[j] != in->dims[k])
            return fm_fail(it, FM_ERR_FORMAT, "TRANSPOSE permutation does not give the output shape", opi, op->in[1], j);
        seen |= 1 << k;
        p->dims[d] = out->dims[j];
        p->step[d] = stride[k];
    }
    p->elem = (uint8_t)(in->bytes / (uint32_t)fm_elements(in));
    op->units = (uint32_t)(fm_elements(out) / p->dims[3]);
    return FM_OK;
}

const fm_kernel fm_kernel_transpose = {FM_OP_TRANSPOSE, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(fm_copy_eval), FM_OP_RECORD(copy)};
