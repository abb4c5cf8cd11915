/* MSP430 int8 dot product on the hardware multiplier: signed multiply-accumulate (MACS) into the
 * multiplier's own 32-bit accumulator, so the loop is two register stores per MAC; the loop
 * itself is fm_dot_s8_rows_hwmult (hwmult_asm.S). */
#include "fm_dot.h"

#if defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT

/* fm_dot_s8_rows_hwmult: hwmult_asm.S. */

int32_t fm_dot_s8_hwmult(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset,
                         int32_t acc)
{
    return fm_dot_s8_rows_hwmult(x, 0, w, n, 1, x_offset, acc);
}
#endif
