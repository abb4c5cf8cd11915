/* LOGISTIC, int8: the input rescaled to Q4.27, gemmlowp's fixed-point logistic, output with
 * scale 1/256 and zero point -128 (TFLite Micro's reference). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    const fm_tensor *in, *out;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "LOGISTIC needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (out->zero_point != -128)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LOGISTIC output zero point must be -128", opi, op->out,
                       out->zero_point);
    return fm_q427_input(it, opi, op, in, out);
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    fm_q427_eval(it, op, begin, end, fm_logistic_fixed, 23, -128);
}

const fm_kernel fm_kernel_logistic = {FM_OP_LOGISTIC, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(logistic)};
