/* int8 dot products (the CONV_2D / FULLY_CONNECTED inner loop) on the cases of the generated
 * header dot_cases.h, with every implementation this build has. Each call is bracketed by
 * fm_target_mark() so that the emulator's counters give its cost; one line per call:
 *     @dot <case> <impl> <result>
 * in the order of the measured calls. */
#include <stdint.h>

#include "dot_cases.h"
#include "fm_dot.h"
#include "fm_target.h"

typedef int32_t (*dot_fn)(const int8_t *, const int8_t *, uint16_t, int16_t, int32_t);

/* TFLite Micro's reference kernels write the MAC with int32 operands: on a 16-bit MCU that is a
 * 32x32 multiply per MAC. Kept as the baseline the other variants are measured against. */
static int32_t dot_ref32(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc)
{
    uint16_t i;
    for (i = 0; i < n; i++) {
        const int32_t xv = x[i];
        const int32_t wv = w[i];
        acc += wv * (xv + x_offset);
    }
    return acc;
}

static const struct {
    const char *name;
    dot_fn fn;
} impls[] = {
    {"ref32", dot_ref32},
    {"c", fm_dot_s8_c},
#if defined(__ARM_FEATURE_DSP) && !defined(FM_DOT_PORTABLE)
    {"dsp", fm_dot_s8_dsp},
#endif
#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
    {"hwmult", fm_dot_s8_hwmult},
#endif
};

static int32_t results[DOT_NUM_CASES][sizeof impls / sizeof impls[0]];

int main(void)
{
    uint16_t c, k;
    for (c = 0; c < DOT_NUM_CASES; c++) {
        for (k = 0; k < sizeof impls / sizeof impls[0]; k++) {
            fm_target_mark();
            results[c][k] = impls[k].fn(dot_x + dot_start[c], dot_w + dot_start[c], dot_len[c],
                                        dot_offset[c], dot_bias[c]);
            fm_target_mark();
        }
    }
    for (c = 0; c < DOT_NUM_CASES; c++) {
        for (k = 0; k < sizeof impls / sizeof impls[0]; k++) {
            fm_target_puts("@dot ");
            fm_target_put_i32((int32_t)c);
            fm_target_putc(' ');
            fm_target_puts(impls[k].name);
            fm_target_putc(' ');
            fm_target_put_i32(results[c][k]);
            fm_target_putc('\n');
        }
    }
    return 0;
}
