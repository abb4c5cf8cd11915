/* Portable int8 dot product and the build-time choice of fm_dot_s8 (see fm_dot.h). */
#include "fm_dot.h"

int32_t fm_dot_s8_c(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc)
{
    uint16_t i;
    for (i = 0; i < n; i++) {
        /* (x + offset) and w both fit 16 bits, so does their product's magnitude (<= 255 * 128):
         * a 16x16 multiply suffices even where int is 16 bits. */
        const int16_t a = (int16_t)(x[i] + x_offset);
        acc += (int32_t)(int16_t)(a * (int16_t)w[i]);
    }
    return acc;
}

int32_t fm_dot_s8(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc)
{
#if defined(__ARM_FEATURE_DSP) && !defined(FM_DOT_PORTABLE)
    return fm_dot_s8_dsp(x, w, n, x_offset, acc);
#elif defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT && !defined(FM_DOT_PORTABLE)
    return fm_dot_s8_hwmult(x, w, n, x_offset, acc);
#else
    return fm_dot_s8_c(x, w, n, x_offset, acc);
#endif
}

int32_t fm_dot_s8_rows(const int8_t *x, ptrdiff_t x_step, const int8_t *w, uint16_t n, uint16_t rows,
                       int16_t x_offset, int32_t acc)
{
#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT && !defined(FM_DOT_PORTABLE)
    return fm_dot_s8_rows_hwmult(x, x_step, w, n, rows, x_offset, acc);  /* one accumulator */
#else
    for (; rows > 0; rows--, x += x_step, w += n) acc = fm_dot_s8(x, w, n, x_offset, acc);
    return acc;
#endif
}

const char *fm_dot_s8_impl(void)
{
#if defined(__ARM_FEATURE_DSP) && !defined(FM_DOT_PORTABLE)
    return "dsp";
#elif defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT && !defined(FM_DOT_PORTABLE)
    return "hwmult";
#else
    return "c";
#endif
}
