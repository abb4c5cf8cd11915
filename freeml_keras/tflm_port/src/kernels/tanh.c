/* TANH, int8: the input rescaled to Q4.27, gemmlowp's fixed-point tanh, output with scale 1/128
 * and zero point 0 (TFLite Micro's reference; the GRU cell of a Keras GRU unrolled by the
 * converter uses it). The input rescaling is LOGISTIC's (the same words in freeml_prepare). */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    const fm_tensor *in, *out;
    fm_status s;
    if (op->num_in < 1) return fm_fail(it, FM_ERR_FORMAT, "TANH needs an input", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (out->zero_point != 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "TANH output zero point must be 0", opi, op->out, out->zero_point);
    return fm_q427_input(it, opi, op, in, out);
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    fm_q427_eval(it, op, begin, end, fm_tanh_fixed, 24, 0);
}

const fm_kernel fm_kernel_tanh = {FM_OP_TANH, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(logistic)};
