/* The int8 multiply-accumulate inner loop of CONV_2D / FULLY_CONNECTED:
 *     acc + sum_i (x[i] + x_offset) * w[i]
 * with one implementation per target, chosen at build time:
 *   - Cortex-M4 with the DSP extension (__ARM_FEATURE_DSP): SXTAB16/SXTB16 unpacking and the
 *     dual 16-bit multiply-accumulate SMLAD, 4 MACs per step (fm_dot_s8_dsp);
 *   - MSP430 with FM_MSP430_HWMULT=1: the memory-mapped hardware multiplier in signed
 *     multiply-accumulate mode (MACS/OP2, 32-bit RESLO/RESHI accumulator) (fm_dot_s8_hwmult);
 *   - anything else: portable C99 (fm_dot_s8_c), which every variant must equal exactly.
 * x_offset is the negated input zero point, in [-127, 128], so (x + x_offset) fits 16 bits and
 * each product fits 17 bits: the sum is exact in int32 for n < 2^15. */
#ifndef FREEML_FM_DOT_H
#define FREEML_FM_DOT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int32_t fm_dot_s8_c(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc);
#if defined(__ARM_FEATURE_DSP)
int32_t fm_dot_s8_dsp(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc);
#endif
#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
int32_t fm_dot_s8_hwmult(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset,
                         int32_t acc);
#endif

/* The best implementation this build has. */
int32_t fm_dot_s8(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc);

/* Which implementation fm_dot_s8 is: "dsp", "hwmult" or "c". */
const char *fm_dot_s8_impl(void);

#ifdef __cplusplus
}
#endif
#endif
