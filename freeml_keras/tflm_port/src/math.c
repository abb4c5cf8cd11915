/* Fixed-point helpers with the exact rounding of TFLite Micro's reference kernels (its default
 * double-rounding MultiplyByQuantizedMultiplier and gemmlowp's fixed-point exp / reciprocal).
 * Written from the published definitions; the only file with 64-bit integer arithmetic. */
#include "freeml/fm_math.h"

#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
/* fm_srdhm, fm_rdbpot and fm_mul_by_qm: targets/msp430/hwmult_asm.S (the hardware
 * multiplier, about 100 cycles per requantized value). */
#define FM_TARGET_REQUANT 1
#elif defined(FM_TARGET_MUL16)
/* The target's 16 x 16 -> 32-bit unsigned multiply (the MSP430's hardware multiplier). */
uint32_t fm_mul16x16(uint16_t a, uint16_t b);
#define FM_MUL16(a, b) fm_mul16x16((a), (b))

/* The same result as below from 16-bit limbs and 32-bit words: on a 16-bit CPU a 64-bit product,
 * add and shift are long helper calls (this runs once per output value of every requantizing
 * kernel). |a * b| + nudge is formed as a magnitude in hi:lo, then bits 31..62 are taken. */
int32_t fm_srdhm(int32_t a, int32_t b)
{
    const uint8_t neg = (uint8_t)((a < 0) != (b < 0));
    const uint32_t ua = a < 0 ? (uint32_t)0 - (uint32_t)a : (uint32_t)a;
    const uint32_t ub = b < 0 ? (uint32_t)0 - (uint32_t)b : (uint32_t)b;
    const uint16_t a0 = (uint16_t)ua, a1 = (uint16_t)(ua >> 16), b0 = (uint16_t)ub, b1 = (uint16_t)(ub >> 16);
    const uint32_t p01 = FM_MUL16(a0, b1), p10 = FM_MUL16(a1, b0);
    uint32_t lo = FM_MUL16(a0, b0), hi = FM_MUL16(a1, b1), t, q;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    /* a product of 0 counts as non-negative (nudge 2^30, result 0) */
    t = lo + (p01 << 16); hi += (p01 >> 16) + (t < lo); lo = t;
    t = lo + (p10 << 16); hi += (p10 >> 16) + (t < lo); lo = t;
    /* ab >= 0: (|ab| + 2^30) >> 31; ab < 0: -((|ab| - 1 + 2^30) >> 31) (C division truncates) */
    t = lo + (((uint32_t)1 << 30) - neg); hi += (t < lo); lo = t;
    q = (hi << 1) | (lo >> 31);      /* < 2^31: |ab| + 2^30 < 2^62 when not both INT32_MIN */
    return neg ? -(int32_t)q : (int32_t)q;  /* a zero product gives q = 0 either way */
}
#else
int32_t fm_srdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int32_t nudge;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? (int32_t)(1L << 30) : (int32_t)(1 - (1L << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}
#endif

#ifndef FM_TARGET_REQUANT
int32_t fm_rdbpot(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);   /* exponent <= 31 */
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t fm_mul_by_qm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    /* TFLite multiplies with wrap-around here; do it in unsigned arithmetic to stay defined. */
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return fm_rdbpot(fm_srdhm(shifted, multiplier), right);
}
#endif

/* (inline: with a constant exponent the threshold and shift are constants, not the 16-bit
 * CPU's variable 32-bit shift loops) */
static inline int32_t sat_shift_left(int32_t x, int32_t exponent)
{
    const int32_t threshold = (int32_t)(((int32_t)1 << (31 - exponent)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return (int32_t)((uint32_t)x << exponent);
}

int32_t fm_sat_shift_left(int32_t x, int32_t exponent)
{
    return sat_shift_left(x, exponent);
}

int32_t fm_round_d(double v)
{
    double a = v < 0 ? -v : v;
    uint32_t r;
    if (!(v == v)) return 0;
    if (a >= 2147483647.0) return v < 0 ? INT32_MIN : INT32_MAX;
    /* 0 <= a < 2^31 - 1: 32-bit conversions are exact and need no 64-bit helpers */
    r = (uint32_t)a;                 /* truncation; a - r is exact */
    if (a - (double)r >= 0.5) r += 1;
    return v < 0 ? -(int32_t)r : (int32_t)r;
}

int32_t fm_round_f(float v)
{
    return fm_round_d((double)v);    /* every float is exactly a double: same result */
}

int fm_quantize_multiplier(double m, int32_t *q, int32_t *shift)
{
    int32_t e = 0;
    uint32_t fixed;
    double frac, scaled;
    *q = 0;
    *shift = 0;
    if (!(m == m) || m < 0 || m > 1e30) return 0;
    if (m == 0.0) return 1;
    /* frexp by exact halving / doubling: m = frac * 2^e with frac in [0.5, 1). */
    frac = m;
    while (frac >= 1.0) { frac *= 0.5; e++; }
    while (frac < 0.5) { frac *= 2.0; e--; }
    scaled = frac * 2147483648.0;    /* exact, in [2^30, 2^31): a 32-bit conversion is exact */
    fixed = (uint32_t)scaled;
    if (scaled - (double)fixed >= 0.5) fixed += 1;
    if (fixed == 0x80000000u) { fixed /= 2; e++; }
    if (e < -31) { e = 0; fixed = 0; }
    *q = (int32_t)fixed;
    *shift = e;
    return 1;
}

int32_t fm_clz32(uint32_t x)
{
    /* by 16-bit halves and bytes: word and byte moves, not 32-bit shift loops, on 16-bit CPUs */
    uint16_t h = (uint16_t)(x >> 16);
    int16_t n = 0;
    if (x == 0) return 32;
    if (h == 0) { h = (uint16_t)x; n = 16; }
    if (!(h & 0xFF00u)) { h = (uint16_t)(h << 8); n += 8; }
    while (!(h & 0x8000u)) { h = (uint16_t)(h << 1); n++; }
    return n;
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8. */
static int32_t exp_quarter(int32_t a)
{
    const int32_t constant_term = 1895147668;   /* exp(-1/8) in Q0.31 */
    const int32_t one_third = 715827883;        /* 1/3 in Q0.31 */
    const int32_t x = a + (1L << 28);
    const int32_t x2 = fm_srdhm(x, x);
    const int32_t x3 = fm_srdhm(x2, x);
    const int32_t x4 = fm_srdhm(x2, x2);
    const int32_t x4_over_4 = fm_rdbpot(x4, 2);
    const int32_t poly = fm_rdbpot(fm_srdhm(x4_over_4 + x3, one_third) + x2, 1);
    return constant_term + fm_srdhm(constant_term, x + poly);
}

int32_t fm_exp_on_negative_values_q5(int32_t a)
{
    /* exp(-2^k) for k = -2 .. 4 in Q0.31, applied for each set bit of the remainder. */
    static const int32_t mults[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535,
                                     720401, 242};
    const int32_t frac_bits = 26;
    const int32_t quarter = (int32_t)1 << (frac_bits - 2);
    const int32_t mod = (a & (quarter - 1)) - quarter;
    int32_t result = exp_quarter(fm_sat_shift_left(mod, 5));
    const int32_t remainder = mod - a;
    uint32_t bit = (uint32_t)1 << (frac_bits - 2);      /* bit k of the remainder, k = 0 .. 6 */
    int32_t k;
    for (k = 0; k < 7; k++, bit <<= 1) {
        if ((uint32_t)remainder & bit) result = fm_srdhm(result, mults[k]);
    }
    if (a == 0) result = INT32_MAX;
    return result;
}

/* gemmlowp's Newton-Raphson division of one_over_one_plus_x_for_x_in_0_1 and
 * one_minus_x_over_one_plus_x_for_x_in_0_1 (Q0.31 in): the Q2.29 iterate. */
static int32_t newton_reciprocal(int32_t a)
{
    /* constants 48/17 and -32/17; gemmlowp's RoundingHalfSum(a, 1): (a + INT32_MAX + 1) / 2 in
     * 64 bits, truncated; the sum is negative only for INT32_MIN. 32-bit arithmetic (no 64-bit
     * helper calls on 16-bit CPUs). */
    const int32_t half_den = a == INT32_MIN ? -1 : (int32_t)(((uint32_t)a + 0x80000000u) >> 1);
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t x = 1515870810 + fm_srdhm(half_den, -1010580540);
    int i;
    for (i = 0; i < 3; i++) {
        const int32_t hdx = fm_srdhm(half_den, x);
        const int32_t one_minus = one_q2 - hdx;
        x = x + sat_shift_left(fm_srdhm(x, one_minus), 2);
    }
    return x;
}

int32_t fm_tanh_fixed(int32_t a, int32_t int_bits)
{
    /* -tanh(n) for n = -|a| < 0 is (1 - e) / (1 + e), e = exp(2n) (n's raw value read with one
     * more integer bit) */
    int32_t t;
    if (a == 0) return 0;
    t = sat_shift_left(newton_reciprocal(fm_exp_on_negative_values(a > 0 ? -a : a, int_bits + 1)) -
                       ((int32_t)1 << 29), 2);
    return a < 0 ? -t : t;
}

int32_t fm_one_over_one_plus_x(int32_t a)
{
    return sat_shift_left(newton_reciprocal(a), 1);
}

void fm_mean_multiplier(int32_t *mult, int32_t *shift, int32_t count)
{
    /* index of the highest set bit of count, as TFLite's 63 - CountLeadingZeros(uint64) */
    int32_t s = 31 - fm_clz32((uint32_t)count);
    if (s > 32) s = 32;
    if (s > 31 + *shift) s = 31 + *shift;
    if (s < 0) s = 0;
    *mult = (int32_t)(((int64_t)*mult << s) / count);
    *shift = *shift - s;
}

int32_t fm_exp_on_negative_values(int32_t a, int32_t int_bits)
{
    /* gemmlowp's exp_on_negative_values for a Q(int_bits).(31 - int_bits) input: exp of the
     * remainder in [-1/4, 0) by the Taylor series, times exp(-2^k) for each set bit k of the
     * rest (k < int_bits). */
    static const int32_t mults[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535,
                                     720401, 242};
    const int32_t frac_bits = 31 - int_bits;
    const int32_t quarter = (int32_t)1 << (frac_bits - 2);
    const int32_t mod = (a & (quarter - 1)) - quarter;
    int32_t result = exp_quarter(fm_sat_shift_left(mod, int_bits));
    const int32_t remainder = mod - a;
    int32_t k;
    for (k = 0; k < 7 && k < int_bits + 2; k++) {
        if (remainder & ((int32_t)1 << (frac_bits - 2 + k)))
            result = fm_srdhm(result, mults[k]);
    }
    if (a == 0) result = INT32_MAX;
    return result;
}

int32_t fm_logistic_fixed(int32_t a, int32_t int_bits)
{
    int32_t pos;
    if (a == 0) return (int32_t)1 << 30;
    pos = fm_one_over_one_plus_x(fm_exp_on_negative_values(a > 0 ? -a : a, int_bits));
    return a > 0 ? pos : INT32_MAX - pos;
}
