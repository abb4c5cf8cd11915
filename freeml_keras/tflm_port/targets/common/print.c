/* Portable text output on top of fm_target_putc (no printf: it would cost kilobytes and
 * thousands of counted instructions). */
#include "fm_target.h"

void fm_target_puts(const char *s)
{
    while (*s) fm_target_putc(*s++);
}

void fm_target_put_i32(int32_t v)
{
    char buf[12];
    uint8_t n = 0;
    /* magnitude in unsigned arithmetic: -INT32_MIN overflows int32_t */
    uint32_t u = v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
    do {
        buf[n++] = (char)('0' + (char)(u % 10u));
        u /= 10u;
    } while (u != 0u);
    if (v < 0) fm_target_putc('-');
    while (n > 0) fm_target_putc(buf[--n]);
}
