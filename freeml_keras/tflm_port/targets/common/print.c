/* Portable text output on top of fm_target_putc (no printf: it would cost kilobytes and
 * thousands of counted instructions). */
#include "fm_target.h"

void fm_target_puts(const char *s)
{
    while (*s) fm_target_putc(*s++);
}

/* Decimal digits by subtracting powers of ten, not by division: the MSP430 has no divider, and
 * its software 32-bit division and remainder cost about 700 instructions per digit. A program
 * that prints its answer after every power-on (programs/power_run.c) would otherwise spend more
 * on the printing than on a small model's inference, and short charges would never get past it. */
static const uint32_t fm_pow10[9] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                     10000u, 1000u, 100u, 10u};

void fm_target_put_i32(int32_t v)
{
    /* magnitude in unsigned arithmetic: -INT32_MIN overflows int32_t */
    uint32_t u = v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
    uint8_t i, started = 0;
    if (v < 0) fm_target_putc('-');
    for (i = 0; i < 9u; i++) {
        char d = '0';
        while (u >= fm_pow10[i]) {
            u -= fm_pow10[i];
            d++;
        }
        if (d != '0' || started) {
            fm_target_putc(d);
            started = 1;
        }
    }
    fm_target_putc((char)('0' + (char)u));
}
