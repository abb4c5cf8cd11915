/* Cortex-M4 int8 dot product with the DSP extension: four int8 pairs per step, unpacked to
 * 16-bit halves with SXTB16 / SXTAB16 (which also adds the input offset) and accumulated with
 * the dual 16-bit multiply-accumulate SMLAD (ACLE intrinsics from arm_acle.h). */
#include <string.h>

#include "fm_dot.h"

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>

/* Even / odd bytes of w, sign-extended to two 16-bit halves each. */
#define FM_UNPACK_EVEN(v) __sxtb16((int8x4_t)(v))
#define FM_UNPACK_ODD(v) fm_sxtb16_ror8(v)

int32_t fm_dot_s8_dsp(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset, int32_t acc)
{
    const int16x2_t off2 = (int16x2_t)((uint32_t)(uint16_t)x_offset * 0x00010001u);
    uint16_t i;
    int32_t a0 = acc, a1 = 0;
    for (i = n >> 3; i > 0; i--) {
        uint32_t xv0, xv1, wv0, wv1;
        /* memcpy is the C99 way to read unaligned words; gcc emits plain LDR (the M4 allows
         * unaligned LDR). */
        memcpy(&xv0, x, 4);
        memcpy(&xv1, x + 4, 4);
        memcpy(&wv0, w, 4);
        memcpy(&wv1, w + 4, 4);
        a0 = __smlad(__sxtab16(off2, (int8x4_t)xv0), FM_UNPACK_EVEN(wv0), a0);
        a1 = __smlad(fm_sxtab16_ror8(off2, xv0), FM_UNPACK_ODD(wv0), a1);
        a0 = __smlad(__sxtab16(off2, (int8x4_t)xv1), FM_UNPACK_EVEN(wv1), a0);
        a1 = __smlad(fm_sxtab16_ror8(off2, xv1), FM_UNPACK_ODD(wv1), a1);
        x += 8;
        w += 8;
    }
    return fm_dot_s8_c(x, w, (uint16_t)(n & 7u), x_offset, a0 + a1);
}
#endif
