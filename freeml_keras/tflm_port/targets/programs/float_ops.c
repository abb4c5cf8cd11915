/* IEEE 754 arithmetic as the target's compiler and run-time helpers do it, on the operand pairs
 * of the generated header float_cases.h (bit patterns), printed as bit patterns for the host to
 * compare exactly. One line per case:
 *     @f64 <i> <a+b> <a-b> <a*b> <a/b> <cmp(a,b)> <(int32)a> <(float)a> <float(a)*float(b)>
 *          <float(a)/float(b)> <(double)(int32)b>
 * where 64-bit patterns are printed as two signed 32-bit halves (high first). */
#include <stdint.h>
#include <string.h>

#include "float_cases.h"
#include "fm_target.h"

static uint64_t bits_d(double d) { uint64_t b; memcpy(&b, &d, sizeof b); return b; }
static double from_bits_d(uint64_t b) { double d; memcpy(&d, &b, sizeof d); return d; }
static uint32_t bits_f(float f) { uint32_t b; memcpy(&b, &f, sizeof b); return b; }

static void put_u64(uint64_t v)
{
    fm_target_putc(' ');
    fm_target_put_i32((int32_t)(uint32_t)(v >> 32));
    fm_target_putc(' ');
    fm_target_put_i32((int32_t)(uint32_t)v);
}

static void put_u32(uint32_t v)
{
    fm_target_putc(' ');
    fm_target_put_i32((int32_t)v);
}

/* volatile: the operations must run on the target, not be folded by the compiler */
static volatile double va, vb;
static volatile int32_t vi;

int main(void)
{
    uint16_t i;
    for (i = 0; i < FLOAT_NUM_CASES; i++) {
        double a, b;
        float fa, fb;
        int16_t c;
        va = from_bits_d(float_a[i]);
        vb = from_bits_d(float_b[i]);
        vi = float_i[i];
        a = va;
        b = vb;
        fa = (float)a;
        fb = (float)b;
        c = (int16_t)((a < b) ? -1 : (a > b) ? 1 : (a == b) ? 0 : 2);
        fm_target_puts("@f64 ");
        fm_target_put_i32((int32_t)i);
        put_u64(bits_d(a + b));
        put_u64(bits_d(a - b));
        put_u64(bits_d(a * b));
        put_u64(bits_d(a / b));
        fm_target_putc(' ');
        fm_target_put_i32(c);
        fm_target_putc(' ');
        fm_target_put_i32((a > -2147483648.0 && a < 2147483648.0) ? (int32_t)a : 0);
        put_u32(bits_f(fa));
        put_u32(bits_f(fa * fb));
        put_u32(bits_f(fa / fb));
        put_u64(bits_d((double)vi));
        fm_target_putc('\n');
    }
    return 0;
}
