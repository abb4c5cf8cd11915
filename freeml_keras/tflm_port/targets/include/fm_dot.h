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

#include <stddef.h>
#include <stdint.h>
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

int32_t fm_dot_s8_c(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc);
#if defined(__ARM_FEATURE_DSP)
int32_t fm_dot_s8_dsp(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc);
/* The odd bytes of v sign-extended to two 16-bit halves (SXTB16 with its built-in ROR #8), and
 * added to a's halves (SXTAB16): gcc 12 does not fold a separate rotation into the ACLE
 * intrinsics (one extra instruction per 4 MACs), so these two are inline assembly. The
 * SMLAD loop (dot_dsp.c) and the kernels' Cortex-M4 paths (kernels/mac_dsp.c) use them. */
static inline int16x2_t fm_sxtb16_ror8(uint32_t v)
{
    int16x2_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

static inline int16x2_t fm_sxtab16_ror8(int16x2_t a, uint32_t v)
{
    int16x2_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}
#endif
#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
int32_t fm_dot_s8_hwmult(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset,
                         int32_t acc);
#endif

/* Kernels call the target's loop for runs of at least FM_TARGET_DOT_MIN values (shorter ones: the
 * call costs more than it saves; the build may set it); FM_TARGET_DOT_ALWAYS: for every length,
 * with no C loop in the kernel (16-bit address spaces, where no run reaches 2^15 bytes). */
#ifndef FM_TARGET_DOT_MIN
#define FM_TARGET_DOT_MIN 16
#endif
#define FM_TARGET_DOT_ALWAYS (FM_TARGET_DOT_MIN <= 1 && UINTPTR_MAX <= 0xFFFFu)

/* The best implementation this build has. */
int32_t fm_dot_s8(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc);

/* A filter window: acc + the dot products of `rows` runs of n values, the runs of w contiguous
 * and those of x `x_step` bytes apart (a convolution's filter rows against its input rows). */
int32_t fm_dot_s8_rows(const int8_t *x, ptrdiff_t x_step, const int8_t *w, uint16_t n, uint16_t rows,
                       int16_t x_offset, int32_t acc);
#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
/* Whole pixels on the MSP430's multiplier (hwmult_asm.S): n_out int8 output values, one per
 * output channel oc, each acc0[oc] (0 without acc0) + the dot product of the channel's weights
 * (contiguous from w, one channel after the other) with `rows` runs of row_len input values
 * (x_off added to each; a run starts row_skip bytes after the end of the one before), then
 * fm_requant_s8 (fm_math.h) with mult[oc], shift[oc] and `out` (an fm_out_range). CONV_2D's
 * windows inside the input and FULLY_CONNECTED's dense rows of at most FM_PX_MAX values
 * (rows * row_len, gathered once per call on the stack): one call per pixel or row. Longer
 * windows keep the kernels' loops (there the per-value work is spread over more MACs). */
#define FM_PX_HWMULT 1
#define FM_PX_MAX 32            /* hwmult_asm.S's FM_PX_GATHER */
typedef struct {
    const int32_t *acc0, *mult;
    const int8_t *shift;
    const void *out;
    int16_t row_skip;
    uint16_t row_len, rows;
    int16_t x_off;
} fm_px_hwmult_t;
void fm_px_hwmult(const int8_t *x, const int8_t *w, const fm_px_hwmult_t *c, int8_t *o, uint16_t n_out);
int32_t fm_dot_s8_rows_hwmult(const int8_t *x, ptrdiff_t x_step, const int8_t *w, uint16_t n, uint16_t rows,
                              int16_t x_offset, int32_t acc);
#endif

/* Which implementation fm_dot_s8 is: "dsp", "hwmult" or "c". */
const char *fm_dot_s8_impl(void);

#ifdef __cplusplus
}
#endif
#endif
