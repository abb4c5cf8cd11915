/* Integer arithmetic the MSP430 build lowers to run-time helpers (16/32/64-bit multiply, divide,
 * remainder and shifts), printed for the host to compare, and a non-zero exit status (7) that
 * the driver must report. Lines: @int <name> <value>. */
#include <stdint.h>

#include "fm_target.h"

/* volatile: keep the compiler from folding the arithmetic at build time */
static volatile int32_t va = -123456789, vb = 98765;
static volatile int64_t vc = -1234567890123LL, vd = 987654321LL;
static volatile int16_t vs = 7, vx = -300, vy = 217;
static volatile int32_t vmin = INT32_MIN;

static void put_line(const char *name, int32_t v)
{
    fm_target_puts("@int ");
    fm_target_puts(name);
    fm_target_putc(' ');
    fm_target_put_i32(v);
    fm_target_putc('\n');
}

int main(void)
{
    const int32_t a = va, b = vb;
    const int64_t c = vc, d = vd;
    const int16_t s = vs;
    put_line("mul32", (int32_t)((uint32_t)a * (uint32_t)b));
    put_line("div32", a / b);
    put_line("rem32", a % b);
    put_line("divu32", (int32_t)((uint32_t)a / (uint32_t)b));
    put_line("shl32", (int32_t)((uint32_t)a << s));
    put_line("sra32", a >> s);
    put_line("mul64hi", (int32_t)((int64_t)((uint64_t)c * (uint64_t)d) >> 32));
    put_line("mul64lo", (int32_t)((uint64_t)c * (uint64_t)d));
    put_line("mul32x32hi", (int32_t)(((int64_t)a * (int64_t)b) >> 32));
    put_line("mul32x32lo", (int32_t)((int64_t)a * (int64_t)b));
    put_line("mulminhi", (int32_t)(((int64_t)vmin * (int64_t)vmin) >> 32));
    put_line("mulminlo", (int32_t)((int64_t)vmin * (int64_t)vb));
    put_line("div64", (int32_t)(c / d));
    put_line("rem64", (int32_t)(c % d));
    put_line("sra64", (int32_t)(c >> (s + 10)));
    put_line("shl64hi", (int32_t)(((uint64_t)c << (s + 20)) >> 32));
    put_line("shr64", (int32_t)(uint32_t)((uint64_t)c >> (s + 30)));
    put_line("mul16", (int16_t)(vx * vy));
    {
        /* variable 32-bit shifts across the word boundary (assembly helpers on the MSP430) */
        static const int16_t counts[] = {0, 1, 7, 15, 16, 17, 20, 31};
        static volatile int32_t shift_by;
        uint8_t i;
        char name[8] = "sra_xx";
        for (i = 0; i < sizeof counts / sizeof counts[0]; i++) {
            shift_by = counts[i];
            name[4] = (char)('0' + counts[i] / 10);
            name[5] = (char)('0' + counts[i] % 10);
            name[0] = 's'; name[1] = 'r'; name[2] = 'a';
            put_line(name, a >> shift_by);
            name[2] = 'l';
            put_line(name, (int32_t)((uint32_t)a >> shift_by));
            name[1] = 'l';
            put_line(name, (int32_t)((uint32_t)a << shift_by));
        }
    }
    return 7;
}
