/* MSP430 int8 dot product on the hardware multiplier: signed multiply-accumulate (MACS) into the
 * multiplier's own 32-bit accumulator, so the loop is two register stores per MAC. */
#include "fm_dot.h"

#if defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
#include "hwmult.h"

/* n MACs of x + x_offset against w into the multiplier's accumulator; returns w + n.
 * Unrolled by 4: clang does not use the MSP430's auto-increment addressing, so fixed offsets from
 * one pointer update per 4 MACs are the cheapest loads it emits. */
static inline const int8_t *mac_run(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset)
{
    uint16_t i;
    for (i = n >> 2; i > 0; i--) {
        FM_MACS = (uint16_t)(int16_t)(x[0] + x_offset);
        FM_OP2 = (uint16_t)(int16_t)w[0];
        FM_MACS = (uint16_t)(int16_t)(x[1] + x_offset);
        FM_OP2 = (uint16_t)(int16_t)w[1];
        FM_MACS = (uint16_t)(int16_t)(x[2] + x_offset);
        FM_OP2 = (uint16_t)(int16_t)w[2];
        FM_MACS = (uint16_t)(int16_t)(x[3] + x_offset);
        FM_OP2 = (uint16_t)(int16_t)w[3];
        x += 4;
        w += 4;
    }
    for (i = n & 3u; i > 0; i--) {
        FM_MACS = (uint16_t)(int16_t)(*x++ + x_offset);
        FM_OP2 = (uint16_t)(int16_t)*w++;
    }
    return w;
}

/* The rows of a filter window in one accumulator (read once at the end). */
int32_t fm_dot_s8_rows_hwmult(const int8_t *x, ptrdiff_t x_step, const int8_t *w, uint16_t n, uint16_t rows,
                              int16_t x_offset, int32_t acc)
{
    FM_RESLO = (uint16_t)acc;                      /* preload the accumulator */
    FM_RESHI = (uint16_t)((uint32_t)acc >> 16);
    for (; rows > 0; rows--, x += x_step) w = mac_run(x, w, n, x_offset);
    return (int32_t)(((uint32_t)FM_RESHI << 16) | FM_RESLO);
}

int32_t fm_dot_s8_hwmult(const int8_t *x, const int8_t *w, uint16_t n, int16_t x_offset,
                         int32_t acc)
{
    return fm_dot_s8_rows_hwmult(x, 0, w, n, 1, x_offset, acc);
}
#endif
