/* The Cortex-M4's (DSP extension) fast paths of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and
 * MAX_POOL_2D: several accumulators per loaded and unpacked word (SXTB16 + SMLAD / SMLABB), the
 * requantization of a block of channels in one assembly loop (one SMLAL and one shift per
 * value); CONV_2D's CSR rows 4 output columns per stored weight. kernels/mac_dsp.c; the
 * kernels call these when FM_MAC_DSP is 1 and keep their portable loops for everything else
 * (borders, dilation, other CSR index widths and strides). */
#ifndef FREEML_FM_MAC_DSP_H
#define FREEML_FM_MAC_DSP_H

#include "freeml/fm_internal.h"

#if defined(__ARM_FEATURE_DSP) && defined(FM_TARGET_DOT) && !defined(FM_DOT_PORTABLE)
#define FM_MAC_DSP 1
#else
#define FM_MAC_DSP 0
#endif

#if FM_MAC_DSP
/* CONV_2D, two output pixels, every output channel: windows at x and x + x_next (the input
 * offset folded into p->acc0, so every tap inside the image), each `rows` runs of n bytes
 * row_step apart against the filters (window = rows * n bytes each); outputs at o and o + o_next
 * (x_next = o_next = 0: one pixel). */
void fm_conv_pair_dsp(const fm_conv_params *p, const int8_t *filt, const int8_t *x, ptrdiff_t x_next,
                      ptrdiff_t row_step, uint16_t n, uint16_t rows, int8_t *o, ptrdiff_t o_next);
/* FULLY_CONNECTED, one input row x of depth values against the filters of output channels
 * [oc, oc_end), four at a time; outputs at o[0 ..]. */
void fm_fc_row_dsp(const fm_fc_params *p, const int8_t *x, const int8_t *filt, const int32_t *bias,
                   int32_t oc, int32_t oc_end, int8_t *o);
/* DEPTHWISE_CONV_2D (depth multiplier 1, no dilation), one output pixel, channels [c_begin, c_end)
 * (a multiple of 4 of them) four at a time, over the taps inside the image: xw the first tap's
 * input, w0 its filter values (both at channel 0), taps rows x cols, input rows y_step and
 * columns x_step bytes apart, filter rows w_row bytes; outputs at o[c_begin ..]. */
void fm_dw_pixel_dsp(const fm_conv_params *p, const int8_t *xw, const int8_t *w0, const int32_t *bias,
                     uint16_t rows, uint16_t cols, ptrdiff_t y_step, ptrdiff_t x_step, ptrdiff_t w_row,
                     int32_t c_begin, int32_t c_end, int8_t *o);
/* CONV_2D with CSR weights, one output row at o: t the row's input rows transposed to [input
 * channel][filter row][column], pw >= out_w + 3 + span columns each, the zero point in the
 * padding (conv_2d.c), 4 output columns per stored weight; for 8-bit column indices, stride 1,
 * at most 256 stored weights per output channel and offsets in t below 2^16: where
 * fm_conv_csr_row_dsp_fits(p, w, pw). */
int fm_conv_csr_row_dsp_fits(const fm_conv_params *p, const fm_tensor *w, int32_t pw);
void fm_conv_csr_row_dsp(const fm_conv_params *p, const fm_tensor *w, const int8_t *t, int32_t pw, int8_t *o);
/* MAX_POOL_2D, one output pixel, all of its ch >= 4 channels four at a time (SSUB8 + SEL; the
 * last group overlapping the one before when ch is not a multiple of 4): the window's rows x cols
 * values from corner, rows row_step and columns ch bytes apart, clamped to the activation range;
 * outputs at o. */
void fm_max_pool_pixel_dsp(const int8_t *corner, uint32_t rows, uint32_t cols, ptrdiff_t row_step, int32_t ch,
                           int32_t act_min, int32_t act_max, int8_t *o);
#endif

#endif
