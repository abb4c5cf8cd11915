/* TFLite Micro's fixed-point arithmetic (gemmlowp rounding), bit for bit. math.c is the only
 * place with 64-bit integer arithmetic, so a target can replace it. */
#ifndef FREEML_FM_MATH_H
#define FREEML_FM_MATH_H

#include <stdint.h>

/* A function the compiler must not inline: for helpers called from many places, where copies
 * cost more code than the call (the MSP430's 48 KB of FRAM hold code and model together). */
#if defined(__GNUC__) || defined(__clang__)
#define FM_NOINLINE __attribute__((noinline))
#else
#define FM_NOINLINE
#endif
/* The same, only on 16-bit targets (the MSP430: code size first); hosts and the Cortex-M4 inline
 * these hot helpers. */
#if UINTPTR_MAX <= 0xFFFFu
#define FM_NOINLINE_SMALL FM_NOINLINE
#else
#define FM_NOINLINE_SMALL
#endif

/* round(a * b / 2^31) with ties away from zero; INT32_MIN * INT32_MIN saturates. */
FM_NOINLINE_SMALL int32_t fm_srdhm(int32_t a, int32_t b);
/* x / 2^exponent rounded to nearest, ties away from zero (0 <= exponent <= 31). */
FM_NOINLINE_SMALL int32_t fm_rdbpot(int32_t x, int32_t exponent);
/* x * multiplier * 2^shift with TFLite's double rounding (MultiplyByQuantizedMultiplier). */
int32_t fm_mul_by_qm(int32_t x, int32_t multiplier, int32_t shift);
/* Saturating x * 2^exponent, 0 < exponent < 31. */
FM_NOINLINE_SMALL int32_t fm_sat_shift_left(int32_t x, int32_t exponent);
/* TFLite's QuantizeMultiplier: m = q * 2^(shift - 31), q in [2^30, 2^31). Returns 0 if m is not a
 * finite number >= 0. */
int fm_quantize_multiplier(double m, int32_t *q, int32_t *shift);
/* Round half away from zero (TfLiteRound) of a float / double, saturated to int32. */
int32_t fm_round_f(float v);
int32_t fm_round_d(double v);
/* exp(a) for a <= 0 given in Q5.26, result in Q0.31 (gemmlowp exp_on_negative_values). */
int32_t fm_exp_on_negative_values_q5(int32_t a);
/* exp(a) for a <= 0 given with int_bits integer bits (1 .. 5), result in Q0.31. */
int32_t fm_exp_on_negative_values(int32_t a, int32_t int_bits);
/* 1 / (1 + exp(-a)) for a given with int_bits integer bits, result in Q0.31 (gemmlowp logistic). */
int32_t fm_logistic_fixed(int32_t a, int32_t int_bits);
/* tanh(a) for a given with int_bits integer bits (1 .. 4), result in Q0.31 (gemmlowp tanh). */
int32_t fm_tanh_fixed(int32_t a, int32_t int_bits);
/* 1 / (1 + x) for x in [0, 1) in Q0.31, result in Q0.31. */
int32_t fm_one_over_one_plus_x(int32_t a);
/* Leading zeros of a 32-bit value (32 for 0). */
int32_t fm_clz32(uint32_t x);
/* TFLite's MEAN rescaling: multiplier and shift that also divide by `count`. */
void fm_mean_multiplier(int32_t *mult, int32_t *shift, int32_t count);
/* The output side of a requantizing kernel: zero point, activation range (int8 values). */
typedef struct {
    int32_t off, min, max;
} fm_out_range;

/* An int8 output value: clamp(fm_mul_by_qm(acc, mult, shift) + q->off, q->min, q->max), for
 * multipliers 0 <= mult < 2^31 (TFLite's). (Argument order: the MSP430 passes the first four
 * 16-bit words in registers.) On the MSP430 with its hardware multiplier: hwmult_asm.S;
 * elsewhere inline, with one 32x32 -> 64-bit multiply. */
#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
int8_t fm_requant_s8(int32_t acc, const fm_out_range *q, int16_t shift, int32_t mult);
#else
/* fm_mul_by_qm for 0 <= mult < 2^31 in parts a kernel can compute once per channel: x already
 * shifted left by max(shift, 0), right = max(-shift, 0) and round = 2^(right-2) for right >= 2. */
static inline int32_t fm_mul_by_qm_r(int32_t x, int32_t mult, int32_t right, int32_t round)
{
    int32_t v;
#if defined(__ARM_FEATURE_DSP)
    {   /* (x * mult + 2^30) >> 31 with one SMLAL (gcc 12 sometimes builds it from UMULL + MLAs) */
        uint32_t lo = (uint32_t)1 << 30;
        int32_t hi = 0;
        __asm__("smlal %0, %1, %2, %3" : "+r"(lo), "+r"(hi) : "r"(x), "r"(mult));
        v = (int32_t)((lo >> 31) | ((uint32_t)hi << 1));
    }
#else
    /* fm_srdhm: for every sign, round(ab / 2^31) with TFLite's nudge is floor((ab + 2^30) / 2^31) */
    v = (int32_t)(((int64_t)x * mult + ((int64_t)1 << 30)) >> 31);
#endif
    /* fm_rdbpot, ties away from zero: floor((w + 2^(right-1)) / 2^right) with w = v - (v < 0)
     * (no overflow: v > INT32_MIN), taken as floor((floor(w / 2) + 2^(right-2)) / 2^(right-1))
     * so that no sum can overflow; for right = 1 that is floor(w / 2) + (w & 1). */
    if (right > 1) {
        const int32_t w = v + (v < 0 ? -1 : 0);
        v = ((w >> 1) + round) >> (right - 1);
    } else if (right == 1) {
        const int32_t w = v + (v < 0 ? -1 : 0);
        v = (w >> 1) + (w & 1);
    }
    return v;
}

/* The same with the shift split into left = max(shift, 0) and right = max(-shift, 0). */
static inline int32_t fm_mul_by_qm_lr(int32_t acc, int32_t mult, int32_t left, int32_t right)
{
    return fm_mul_by_qm_r((int32_t)((uint32_t)acc << left), mult, right,
                          right > 1 ? (int32_t)((uint32_t)1 << (right - 2)) : 0);
}

/* clamp(v + q->off, q->min, q->max) as int8. */
static inline int8_t fm_out_s8(int32_t v, const fm_out_range *q)
{
    v += q->off;
    if (v < q->min) v = q->min;
    if (v > q->max) v = q->max;
    return (int8_t)v;
}

/* fm_mul_by_qm for 0 <= mult < 2^31, inline. */
static inline int32_t fm_mul_by_qm_inline(int32_t acc, int32_t mult, int32_t shift)
{
    return fm_mul_by_qm_lr(acc, mult, shift > 0 ? shift : 0, shift > 0 ? 0 : -shift);
}

static inline int8_t fm_requant_s8(int32_t acc, const fm_out_range *q, int16_t shift, int32_t mult)
{
    return fm_out_s8(fm_mul_by_qm_inline(acc, mult, shift), q);
}
#endif

/* fm_mul_by_qm where it runs once per element (the element-wise kernels: a call each was half
 * their time on x86): inline where 64-bit products are cheap, the call on 16-bit targets. */
#if UINTPTR_MAX <= 0xFFFFu
#define fm_mul_by_qm_fast(acc, mult, shift) fm_mul_by_qm((acc), (mult), (shift))
#else
#define fm_mul_by_qm_fast(acc, mult, shift) fm_mul_by_qm_inline((acc), (mult), (shift))
#endif

#if defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
/* SOFTMAX's per-class passes over a row in assembly on the hardware multiplier (hwmult_asm.S;
 * kernels/softmax.c has the C form of both and the table they read). */
int8_t fm_softmax_sum_hwmult(const int8_t *x, uint16_t n, const void *p, uint32_t *sum);
void fm_softmax_out_hwmult(const int8_t *x, int8_t *o, uint16_t n, const void *p, int32_t recip,
                           uint16_t exponent, uint16_t a, int16_t max);
#define FM_SOFTMAX_ASM 1
#endif
/* The high 16 bits of the unsigned 16 x 16 product a * b. */
static inline uint16_t fm_umul16_hi(uint16_t a, uint16_t b)
{
    return (uint16_t)(((uint32_t)a * (uint32_t)b) >> 16);
}

/* 32-bit product of two int32 values known to fit (helper for 16-bit int targets). */
#define FM_MUL32(a, b) ((int32_t)(a) * (int32_t)(b))

#endif
