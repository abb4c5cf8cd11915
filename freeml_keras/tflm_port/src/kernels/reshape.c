/* RESHAPE, EXPAND_DIMS, SQUEEZE and DENSIFY: no computation. The output is an alias of the
 * input's memory (for DENSIFY: of the CSR constant, which the consuming kernel reads in place). */
#include "freeml/fm_internal.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    const fm_tensor *in, *out;
    if (op->num_in < 1 || op->in[0] < 0) return fm_fail(it, FM_ERR_FORMAT, "missing input", opi, -1, 0);
    in = &it->tensors[op->in[0]];
    out = &it->tensors[op->out];
    if (in->type != out->type || fm_elements(in) != fm_elements(out))
        return fm_fail(it, FM_ERR_FORMAT, "output differs from input in type or size", opi, op->out, 0);
    if (op->code == FM_OP_DENSIFY) {
        if (!(in->flags & FM_T_SPARSE)) return fm_fail(it, FM_ERR_UNSUPPORTED, "DENSIFY of a dense tensor", opi, op->in[0], 0);
    } else if (fm_root(it, op->in[0])->flags & FM_T_SPARSE) {
        return fm_fail(it, FM_ERR_UNSUPPORTED, "reshape of a sparse tensor", opi, op->in[0], 0);
    }
    if (op->code != FM_OP_DENSIFY && (!fm_same_scale(in->scale, out->scale) || in->zero_point != out->zero_point))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "reshape changes quantization", opi, op->out, 0);
    fm_alias(it, op->out, op->in[0]);
    op->units = 0;
    return FM_OK;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    (void)it; (void)op; (void)begin; (void)end;
}

const fm_kernel fm_kernel_reshape = {FM_OP_RESHAPE, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_HEADER_BYTES};
const fm_kernel fm_kernel_expand_dims = {FM_OP_EXPAND_DIMS, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_HEADER_BYTES};
const fm_kernel fm_kernel_squeeze = {FM_OP_SQUEEZE, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_HEADER_BYTES};
const fm_kernel fm_kernel_densify = {FM_OP_DENSIFY, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_HEADER_BYTES};
