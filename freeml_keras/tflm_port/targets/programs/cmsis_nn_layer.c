/* One layer of Arm's CMSIS-NN (int8) between two marks, for bench/targets.py --cmsis-nn: the
 * same layer as one of the runtime's, so that both are counted by the same emulator and plugin.
 * cmsis_nn_case.h (generated) gives the kind (CN_KIND: 1 CONV_2D, 2 DEPTHWISE_CONV_2D, 3
 * FULLY_CONNECTED), shapes, offsets, activation range and the arrays; built against CMSIS-NN's
 * public sources (not part of this project). Prints the status and the output values. */
#include <stdint.h>

#include "arm_nnfunctions.h"
#include "cmsis_nn_case.h"
#include "fm_target.h"

static int8_t output[CN_OUT_SIZE];
static int32_t ctx_buf[CN_BUF_WORDS];
/* the quantization structs take non-const pointers: copies of the generated constants */
static int32_t mult[sizeof cn_mult / sizeof cn_mult[0]], shift[sizeof cn_shift / sizeof cn_shift[0]];

int main(void)
{
    const cmsis_nn_dims in_dims = {CN_IN_N, CN_IN_H, CN_IN_W, CN_IN_C};
    const cmsis_nn_dims f_dims = {CN_F_N, CN_F_H, CN_F_W, CN_F_C};
    const cmsis_nn_dims b_dims = {1, 1, 1, CN_OUT_C};
    const cmsis_nn_dims out_dims = {CN_IN_N, CN_OUT_H, CN_OUT_W, CN_OUT_C};
    cmsis_nn_context ctx;
    arm_cmsis_nn_status st;
    int32_t need, i;
    for (i = 0; i < (int32_t)(sizeof mult / sizeof mult[0]); i++) {
        mult[i] = cn_mult[i];
        shift[i] = cn_shift[i];
    }
#if CN_KIND == 1
    const cmsis_nn_conv_params cp = {CN_IN_OFF, CN_OUT_OFF, {CN_STRIDE_W, CN_STRIDE_H}, {CN_PAD_W, CN_PAD_H},
                                     {1, 1}, {CN_ACT_MIN, CN_ACT_MAX}};
    const cmsis_nn_per_channel_quant_params qp = {mult, shift};
    need = arm_convolve_wrapper_s8_get_buffer_size(&cp, &in_dims, &f_dims, &out_dims);
#elif CN_KIND == 2
    const cmsis_nn_dw_conv_params cp = {CN_IN_OFF, CN_OUT_OFF, CN_OUT_C / CN_IN_C, {CN_STRIDE_W, CN_STRIDE_H},
                                        {CN_PAD_W, CN_PAD_H}, {1, 1}, {CN_ACT_MIN, CN_ACT_MAX}};
    const cmsis_nn_per_channel_quant_params qp = {mult, shift};
    need = arm_depthwise_conv_wrapper_s8_get_buffer_size(&cp, &in_dims, &f_dims, &out_dims);
#else
    const cmsis_nn_fc_params cp = {CN_IN_OFF, 0, CN_OUT_OFF, {CN_ACT_MIN, CN_ACT_MAX}};
    need = arm_fully_connected_s8_get_buffer_size(&f_dims);
#endif
    if (need > (int32_t)sizeof(ctx_buf)) {
        fm_target_puts("@error buffer ");
        fm_target_put_i32(need);
        fm_target_putc('\n');
        return 1;
    }
    ctx.buf = ctx_buf;
    ctx.size = need;
#if CN_KIND == 3
    /* TFLite Micro's CMSIS-NN FULLY_CONNECTED computes these sums in its Prepare (not counted) */
    if (need > 0) arm_vector_sum_s8(ctx_buf, CN_F_N, CN_OUT_C, cn_filter, CN_IN_OFF, 0, cn_bias);
#endif
    fm_target_mark();
#if CN_KIND == 1
    st = arm_convolve_wrapper_s8(&ctx, &cp, &qp, &in_dims, cn_input, &f_dims, cn_filter, &b_dims, cn_bias,
                                 &out_dims, output);
#elif CN_KIND == 2
    st = arm_depthwise_conv_wrapper_s8(&ctx, &cp, &qp, &in_dims, cn_input, &f_dims, cn_filter, &b_dims, cn_bias,
                                       &out_dims, output);
#elif CN_PER_CHANNEL
    {
        const cmsis_nn_per_channel_quant_params qp = {mult, shift};
        st = arm_fully_connected_per_channel_s8(&ctx, &cp, &qp, &in_dims, cn_input, &f_dims, cn_filter, &b_dims,
                                                cn_bias, &out_dims, output);
    }
#else
    {
        const cmsis_nn_per_tensor_quant_params qp = {mult[0], shift[0]};
        st = arm_fully_connected_s8(&ctx, &cp, &qp, &in_dims, cn_input, &f_dims, cn_filter, &b_dims, cn_bias,
                                    &out_dims, output);
    }
#endif
    fm_target_mark();
    fm_target_puts("@status ");
    fm_target_put_i32((int32_t)st);
    fm_target_puts("\n@output");
    for (i = 0; i < CN_OUT_SIZE; i++) {
        fm_target_putc(' ');
        fm_target_put_i32(output[i]);
    }
    fm_target_putc('\n');
    return 0;
}
