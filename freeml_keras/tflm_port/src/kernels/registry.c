/* The kernels this runtime has, looked up by builtin operator code. */
#include "freeml/fm_internal.h"

extern const fm_kernel fm_kernel_conv_2d, fm_kernel_depthwise_conv_2d, fm_kernel_fully_connected,
    fm_kernel_max_pool_2d, fm_kernel_average_pool_2d, fm_kernel_mean, fm_kernel_reshape,
    fm_kernel_expand_dims, fm_kernel_squeeze, fm_kernel_densify, fm_kernel_softmax, fm_kernel_add,
    fm_kernel_concatenation, fm_kernel_quantize, fm_kernel_dequantize, fm_kernel_sub, fm_kernel_mul,
    fm_kernel_maximum, fm_kernel_minimum, fm_kernel_logistic, fm_kernel_pad, fm_kernel_padv2,
    fm_kernel_transpose, fm_kernel_strided_slice, fm_kernel_var_handle, fm_kernel_read_variable,
    fm_kernel_assign_variable, fm_kernel_call_once, fm_kernel_split, fm_kernel_split_v, fm_kernel_svdf,
    fm_kernel_unidirectional_sequence_lstm, fm_kernel_tanh, fm_kernel_unpack,
    fm_kernel_transpose_conv, fm_kernel_relu, fm_kernel_resize_nearest_neighbor,
    fm_kernel_resize_bilinear;

const fm_kernel *const fm_kernels[] = {
    &fm_kernel_conv_2d, &fm_kernel_depthwise_conv_2d, &fm_kernel_fully_connected,
    &fm_kernel_max_pool_2d, &fm_kernel_average_pool_2d, &fm_kernel_mean, &fm_kernel_reshape,
    &fm_kernel_expand_dims, &fm_kernel_squeeze, &fm_kernel_densify, &fm_kernel_softmax,
    &fm_kernel_add, &fm_kernel_concatenation, &fm_kernel_quantize, &fm_kernel_dequantize,
    &fm_kernel_sub, &fm_kernel_mul, &fm_kernel_maximum, &fm_kernel_minimum, &fm_kernel_logistic,
    &fm_kernel_pad, &fm_kernel_padv2, &fm_kernel_transpose, &fm_kernel_strided_slice,
    &fm_kernel_var_handle, &fm_kernel_read_variable, &fm_kernel_assign_variable, &fm_kernel_call_once,
    &fm_kernel_split, &fm_kernel_split_v, &fm_kernel_svdf, &fm_kernel_unidirectional_sequence_lstm,
    &fm_kernel_tanh, &fm_kernel_unpack, &fm_kernel_transpose_conv, &fm_kernel_relu,
    &fm_kernel_resize_nearest_neighbor, &fm_kernel_resize_bilinear,
};

const uint16_t fm_num_kernels = (uint16_t)(sizeof fm_kernels / sizeof fm_kernels[0]);
