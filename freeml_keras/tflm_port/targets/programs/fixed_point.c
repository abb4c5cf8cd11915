/* The runtime's fixed-point helpers (math.c: fm_srdhm, fm_rdbpot, fm_mul_by_qm) on the operand
 * triples of the generated header fixed_cases.h, built as the target's runtime is (on the
 * MSP430: fm_srdhm from 16-bit hardware-multiplier limbs), for the host to compare with TFLite's
 * definitions. One line per case:
 *     @fx <i> <srdhm(a, b)> <rdbpot(a, e)> <mul_by_qm(a, b, s)>
 * with e = c & 31 and s = (c % 63) - 31 (shifts -31 .. 31). */
#include <stdint.h>

#include "fixed_cases.h"
#include "fm_target.h"
#include "freeml/fm_math.h"

static void put_field(int32_t v)
{
    fm_target_putc(' ');
    fm_target_put_i32(v);
}

int main(void)
{
    uint16_t i;
    for (i = 0; i < FIXED_NUM_CASES; i++) {
        const int32_t a = fixed_a[i], b = fixed_b[i], c = fixed_c[i];
        const int32_t shift = (int32_t)((uint32_t)c % 63u) - 31;
        fm_target_puts("@fx");
        put_field(i);
        put_field(fm_srdhm(a, b));
        put_field(fm_rdbpot(a, c & 31));
        /* TFLite's multipliers are non-negative: the sign of b is dropped here */
        put_field(fm_mul_by_qm(a, b == INT32_MIN ? INT32_MAX : (b < 0 ? -b : b), shift));
        fm_target_putc('\n');
    }
    return 0;
}
