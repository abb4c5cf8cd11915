/* The cost of one requantized output value (fm_requant_s8: the 32x32-bit multiply, the rounding
 * right shift, the output offset and the clamp) on the cases of the generated header
 * requant_cases.h, each call bracketed by fm_target_mark() so that the emulator's counters give
 * its cost (a first, empty region: the markers' own). One line per case, in the order of the measured calls:
 *     @rq <case> <int8 output>
 * Output range: offset -5, [-128, 127]; or, when the header defines RQ_RANGES, each case's own
 * (rq_off, rq_min, rq_max: a layer's output zero point and activation range). */
#include <stdint.h>

#include "fm_target.h"
#include "freeml/fm_math.h"
#include "requant_cases.h"

#ifdef RQ_RANGES
static fm_out_range ranges[RQ_NUM_CASES];
#else
static const fm_out_range range = {-5, -128, 127};
#endif
static int8_t results[RQ_NUM_CASES];

int main(void)
{
    uint16_t i;
#ifdef RQ_RANGES
    for (i = 0; i < RQ_NUM_CASES; i++) {
        ranges[i].off = rq_off[i];
        ranges[i].min = rq_min[i];
        ranges[i].max = rq_max[i];
    }
#define range ranges[i]
#endif
    fm_target_mark();       /* an empty region first: the markers' own cost */
    fm_target_mark();
    for (i = 0; i < RQ_NUM_CASES; i++) {
        fm_target_mark();
        results[i] = fm_requant_s8(rq_acc[i], &range, rq_shift[i], rq_mult[i]);
        fm_target_mark();
    }
    for (i = 0; i < RQ_NUM_CASES; i++) {
        fm_target_puts("@rq ");
        fm_target_put_i32((int32_t)i);
        fm_target_putc(' ');
        fm_target_put_i32(results[i]);
        fm_target_putc('\n');
    }
    return 0;
}
