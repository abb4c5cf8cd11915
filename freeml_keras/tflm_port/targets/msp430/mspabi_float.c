/* IEEE 754 floating point for clang --target=msp430 (Debian ships no MSP430 libgcc or
 * compiler-rt): binary64 add / subtract / multiply / divide / compare and the conversions the
 * runtime uses, correctly rounded to nearest-even with subnormals, so that quantization
 * multipliers computed on the MCU equal the host's bit for bit. binary32 arithmetic is done in
 * binary64 and rounded once to binary32: exact for * and correctly rounded for + - / because
 * 53 >= 2 * 24 + 2. Only used at prepare time, so written for clarity rather than speed.
 *
 * Internal form: sign, biased exponent e and a significand sig with the leading one at bit 62,
 * value = sig * 2^(e - 1023 - 62); the 10 bits below the 53-bit mantissa are guard bits and the
 * lowest is sticky. */
#include <stdint.h>
#include <string.h>

#include "mspabi.h"

#define F64_SIGN ((uint64_t)1 << 63)
#define F64_EXP(x) ((int16_t)(((x) >> 52) & 0x7FFu))
#define F64_FRAC(x) ((x) & (((uint64_t)1 << 52) - 1u))
#define F64_INF ((uint64_t)0x7FF << 52)
#define F64_NAN ((uint64_t)0x7FF8 << 48)
#define TOP ((uint64_t)1 << 62)

typedef struct {
    uint8_t sign;
    uint8_t kind;       /* 0 zero, 1 finite nonzero, 2 infinity, 3 NaN */
    int16_t e;
    uint64_t sig;
} unpacked;

#define FM_NOINLINE __attribute__((noinline))  /* shared, not copied: FRAM is scarce */

FM_NOINLINE static uint64_t shift_right_jam(uint64_t v, int16_t n)
{
    uint64_t out;
    if (n <= 0) return v;
    if (n >= 64) return v != 0u;
    out = v >> n;
    if (v & ((((uint64_t)1) << n) - 1u)) out |= 1u;
    return out;
}

FM_NOINLINE static void unpack64p(uint64_t x, unpacked *out)
{
    unpacked u;
    u.sign = (uint8_t)(x >> 63);
    u.e = F64_EXP(x);
    u.sig = F64_FRAC(x);
    if (u.e == 0x7FF) {
        u.kind = u.sig ? 3u : 2u;
    } else if (u.e == 0) {
        if (u.sig == 0u) {
            u.kind = 0;
        } else {                              /* subnormal: normalize */
            u.kind = 1;
            u.sig <<= 10;
            u.e = 1;
            while (u.sig < TOP) { u.sig <<= 1; u.e--; }
        }
    } else {
        u.kind = 1;
        u.sig = (u.sig | ((uint64_t)1 << 52)) << 10;
    }
    *out = u;
}

#define unpack64(x) unpack64_value(x)
static inline unpacked unpack64_value(uint64_t x)
{
    unpacked u;
    unpack64p(x, &u);
    return u;
}

FM_NOINLINE static uint64_t round_pack64(uint8_t sign, int16_t e, uint64_t sig)
{
    const uint64_t s = (uint64_t)sign << 63;
    uint16_t low;
    if (e >= 0x7FF) return s | F64_INF;
    if (e < 1) { sig = shift_right_jam(sig, (int16_t)(1 - e)); e = 1; }
    low = (uint16_t)(sig & 0x3FFu);
    sig = (sig + 0x200u) >> 10;
    if (low == 0x200u) sig &= ~(uint64_t)1;    /* tie: to even */
    /* the mantissa's implicit one carries into the exponent field (also on rounding up) */
    return s + ((uint64_t)(e - 1) << 52) + sig;
}

FM_NOINLINE static uint64_t add_mag(uint8_t sign, const unpacked *a, const unpacked *b)
{
    /* |a| >= |b| in exponent */
    uint64_t sig;
    int16_t e = a->e;
    sig = a->sig + shift_right_jam(b->sig, (int16_t)(a->e - b->e));
    if (sig >= ((uint64_t)1 << 63)) { sig = shift_right_jam(sig, 1); e++; }
    return round_pack64(sign, e, sig);
}

FM_NOINLINE static uint64_t sub_mag(uint8_t sign, const unpacked *a, const unpacked *b)
{
    /* |a| > |b| */
    uint64_t sig = a->sig - shift_right_jam(b->sig, (int16_t)(a->e - b->e));
    int16_t e = a->e;
    while (sig < TOP) { sig <<= 1; e--; }
    return round_pack64(sign, e, sig);
}

FM_NOINLINE static int8_t cmp_mag(const unpacked *a, const unpacked *b)
{
    if (a->e != b->e) return a->e > b->e ? 1 : -1;
    if (a->sig != b->sig) return a->sig > b->sig ? 1 : -1;
    return 0;
}

static uint64_t add_signed(uint64_t x, uint64_t y, uint8_t negate_y)
{
    unpacked a = unpack64(x), b = unpack64(y);
    int8_t c;
    b.sign ^= negate_y;
    if (a.kind == 3 || b.kind == 3) return F64_NAN;
    if (a.kind == 2 || b.kind == 2) {
        if (a.kind == 2 && b.kind == 2 && a.sign != b.sign) return F64_NAN;
        return ((uint64_t)(a.kind == 2 ? a.sign : b.sign) << 63) | F64_INF;
    }
    if (a.kind == 0 && b.kind == 0) return (uint64_t)(a.sign & b.sign) << 63;
    if (a.kind == 0) return (y & ~F64_SIGN) | ((uint64_t)b.sign << 63);
    if (b.kind == 0) return x;
    if (a.sign == b.sign) return cmp_mag(&a, &b) >= 0 ? add_mag(a.sign, &a, &b) : add_mag(a.sign, &b, &a);
    c = cmp_mag(&a, &b);
    if (c == 0) return 0u;                      /* exact cancellation: +0 */
    return c > 0 ? sub_mag(a.sign, &a, &b) : sub_mag(b.sign, &b, &a);
}

uint64_t fm_f64_add(uint64_t a, uint64_t b) { return add_signed(a, b, 0); }
uint64_t fm_f64_sub(uint64_t a, uint64_t b) { return add_signed(a, b, 1); }

uint64_t fm_f64_mul(uint64_t x, uint64_t y)
{
    const unpacked a = unpack64(x), b = unpack64(y);
    const uint8_t sign = a.sign ^ b.sign;
    uint64_t ma, mb, hi, lo, mid1, mid2, sig;
    uint32_t a0, a1, b0, b1;
    int16_t e;
    if (a.kind == 3 || b.kind == 3) return F64_NAN;
    if (a.kind == 2 || b.kind == 2) {
        if (a.kind == 0 || b.kind == 0) return F64_NAN;
        return ((uint64_t)sign << 63) | F64_INF;
    }
    if (a.kind == 0 || b.kind == 0) return (uint64_t)sign << 63;
    ma = a.sig >> 10;                           /* 53 bits */
    mb = b.sig >> 10;
    a0 = (uint32_t)ma; a1 = (uint32_t)(ma >> 32);
    b0 = (uint32_t)mb; b1 = (uint32_t)(mb >> 32);
    /* 106-bit product hi:lo from four 32x32 -> 64 partial products */
    lo = (uint64_t)a0 * b0;
    mid1 = (uint64_t)a0 * b1;
    mid2 = (uint64_t)a1 * b0;
    hi = (uint64_t)a1 * b1;
    {
        const uint64_t mid = mid1 + mid2;      /* < 2^54: no overflow */
        const uint64_t lo2 = lo + (mid << 32);
        hi += (mid >> 32) + (lo2 < lo ? 1u : 0u);
        lo = lo2;
    }
    /* product in [2^104, 2^106): bits 105..42 -> sig, the rest sticky */
    sig = (hi << 22) | (lo >> 42);
    if (lo & (((uint64_t)1 << 42) - 1u)) sig |= 1u;
    e = (int16_t)(a.e + b.e - 1023);
    if (sig >= ((uint64_t)1 << 63)) { sig = shift_right_jam(sig, 1); e++; }
    if (e < -80) return (uint64_t)sign << 63;   /* far below the smallest subnormal */
    return round_pack64(sign, e, sig);
}

uint64_t fm_f64_div(uint64_t x, uint64_t y)
{
    const unpacked a = unpack64(x), b = unpack64(y);
    const uint8_t sign = a.sign ^ b.sign;
    uint64_t ma, mb, q = 0;
    int16_t e;
    uint8_t i;
    if (a.kind == 3 || b.kind == 3) return F64_NAN;
    if (a.kind == 2) return b.kind == 2 ? F64_NAN : (((uint64_t)sign << 63) | F64_INF);
    if (b.kind == 2) return (uint64_t)sign << 63;
    if (b.kind == 0) return a.kind == 0 ? F64_NAN : (((uint64_t)sign << 63) | F64_INF);
    if (a.kind == 0) return (uint64_t)sign << 63;
    ma = a.sig >> 10;
    mb = b.sig >> 10;
    e = (int16_t)(a.e - b.e + 1023);
    if (ma < mb) { ma <<= 1; e--; }
    /* restoring division: 63 quotient bits, q = floor(ma / mb * 2^62) in [2^62, 2^63) */
    for (i = 0; i < 63; i++) {
        q <<= 1;
        if (ma >= mb) { ma -= mb; q |= 1u; }
        ma <<= 1;
    }
    if (ma != 0u) q |= 1u;
    if (e < -80) return (uint64_t)sign << 63;
    return round_pack64(sign, e, q);
}

/* <0, 0, >0 as a <, ==, > b; NaN compares "greater" (no ordered comparison with NaN can be
 * expressed by one number). */
int16_t fm_f64_cmp(uint64_t x, uint64_t y)
{
    const unpacked a = unpack64(x), b = unpack64(y);
    int8_t c;
    if (a.kind == 3 || b.kind == 3) return 1;
    if (a.kind == 0 && b.kind == 0) return 0;
    if (a.sign != b.sign) return a.sign ? -1 : 1;
    if (a.kind == 2 || b.kind == 2) c = (int8_t)((a.kind == 2) - (b.kind == 2));
    else if (a.kind == 0) c = -1;
    else if (b.kind == 0) c = 1;
    else c = cmp_mag(&a, &b);
    return a.sign ? -c : c;
}

/* ---- binary32 <-> binary64 */
static uint64_t f32_to_f64(uint32_t f)
{
    const uint64_t s = (uint64_t)(f >> 31) << 63;
    int16_t e = (int16_t)((f >> 23) & 0xFFu);
    uint32_t m = f & 0x7FFFFFu;
    if (e == 0xFF) return m ? F64_NAN : (s | F64_INF);
    if (e == 0) {
        if (m == 0u) return s;
        e = 1;
        while (!(m & 0x800000u)) { m <<= 1; e--; }
        m &= 0x7FFFFFu;
    }
    return s | ((uint64_t)(e - 127 + 1023) << 52) | ((uint64_t)m << 29);
}

static uint32_t f64_to_f32(uint64_t x)
{
    const unpacked a = unpack64(x);
    const uint32_t s = (uint32_t)a.sign << 31;
    int16_t e;
    uint64_t sig;
    uint64_t low;
    if (a.kind == 3) return 0x7FC00000u;
    if (a.kind == 2) return s | 0x7F800000u;
    if (a.kind == 0) return s;
    e = (int16_t)(a.e - 1023 + 127);
    sig = a.sig;
    if (e >= 0xFF) return s | 0x7F800000u;
    if (e < 1) { sig = shift_right_jam(sig, (int16_t)(1 - e)); e = 1; }
    low = sig & (((uint64_t)1 << 39) - 1u);
    sig = (sig + ((uint64_t)1 << 38)) >> 39;
    if (low == ((uint64_t)1 << 38)) sig &= ~(uint64_t)1;
    return s + ((uint32_t)(e - 1) << 23) + (uint32_t)sig;
}

static uint64_t bits_d(double d) { uint64_t b; memcpy(&b, &d, sizeof b); return b; }
static double from_bits_d(uint64_t b) { double d; memcpy(&d, &b, sizeof d); return d; }
static uint32_t bits_f(float f) { uint32_t b; memcpy(&b, &f, sizeof b); return b; }
static float from_bits_f(uint32_t b) { float f; memcpy(&f, &b, sizeof f); return f; }

/* int <-> binary64 */
static uint64_t u32_to_f64(uint8_t sign, uint32_t m)
{
    int16_t e = 1023 + 31;
    if (m == 0u) return (uint64_t)sign << 63;
    while (!(m & 0x80000000u)) { m <<= 1; e--; }
    return round_pack64(sign, e, (uint64_t)m << 31);
}

/* Truncates toward zero, saturating out-of-range values (NaN -> 0). */
static int32_t f64_to_i32(uint64_t x)
{
    const unpacked a = unpack64(x);
    int16_t sh;
    uint64_t m;
    if (a.kind == 3 || a.kind == 0) return 0;
    if (a.kind == 2 || a.e >= 1023 + 31) {
        if (a.sign && a.kind == 1 && a.e == 1023 + 31 && a.sig == TOP) return INT32_MIN;
        return a.sign ? INT32_MIN : INT32_MAX;
    }
    if (a.e < 1023) return 0;
    sh = (int16_t)(62 - (a.e - 1023));
    m = a.sig >> sh;
    return a.sign ? (int32_t)((uint32_t)0 - (uint32_t)m) : (int32_t)m;
}

static uint32_t f64_to_u32(uint64_t x)
{
    const unpacked a = unpack64(x);
    if (a.kind == 3 || a.kind == 0 || a.sign || a.e < 1023) return 0;
    if (a.kind == 2 || a.e >= 1023 + 32) return 0xFFFFFFFFu;
    return (uint32_t)(a.sig >> (62 - (a.e - 1023)));
}

/* ---- the EABI entry points with the C calling convention */
float __mspabi_cvtdf(double a);
double __mspabi_cvtfd(float a);
int32_t __mspabi_fixdli(double a);
uint32_t __mspabi_fixdul(double a);
double __mspabi_fltlid(int32_t a);
double __mspabi_fltuld(uint32_t a);
int32_t __mspabi_fixfli(float a);
uint32_t __mspabi_fixful(float a);
float __mspabi_fltlif(int32_t a);
float __mspabi_fltulf(uint32_t a);
float __mspabi_addf(float a, float b);
float __mspabi_subf(float a, float b);
float __mspabi_mpyf(float a, float b);
float __mspabi_divf(float a, float b);
int16_t __mspabi_cmpf(float a, float b);

float __mspabi_cvtdf(double a) { return from_bits_f(f64_to_f32(bits_d(a))); }
double __mspabi_cvtfd(float a) { return from_bits_d(f32_to_f64(bits_f(a))); }
int32_t __mspabi_fixdli(double a) { return f64_to_i32(bits_d(a)); }
uint32_t __mspabi_fixdul(double a) { return f64_to_u32(bits_d(a)); }
double __mspabi_fltlid(int32_t a)
{
    return from_bits_d(u32_to_f64(a < 0, a < 0 ? (uint32_t)0 - (uint32_t)a : (uint32_t)a));
}
double __mspabi_fltuld(uint32_t a) { return from_bits_d(u32_to_f64(0, a)); }
int32_t __mspabi_fixfli(float a) { return f64_to_i32(f32_to_f64(bits_f(a))); }
uint32_t __mspabi_fixful(float a) { return f64_to_u32(f32_to_f64(bits_f(a))); }
float __mspabi_fltlif(int32_t a)
{
    return from_bits_f(f64_to_f32(u32_to_f64(a < 0, a < 0 ? (uint32_t)0 - (uint32_t)a : (uint32_t)a)));
}
float __mspabi_fltulf(uint32_t a) { return from_bits_f(f64_to_f32(u32_to_f64(0, a))); }

#define F32_OP(name, op)                                                                     \
    float name(float a, float b)                                                             \
    {                                                                                        \
        return from_bits_f(f64_to_f32(op(f32_to_f64(bits_f(a)), f32_to_f64(bits_f(b))))); \
    }
F32_OP(__mspabi_addf, fm_f64_add)
F32_OP(__mspabi_subf, fm_f64_sub)
F32_OP(__mspabi_mpyf, fm_f64_mul)
F32_OP(__mspabi_divf, fm_f64_div)

int16_t __mspabi_cmpf(float a, float b)
{
    return fm_f64_cmp(f32_to_f64(bits_f(a)), f32_to_f64(bits_f(b)));
}

/* ---- 64-bit integer conversions and the unordered test (compiler-rt name) */
int64_t __mspabi_fixdlli(double a);
double __mspabi_fltllid(int64_t a);
int16_t __unordsf2(float a, float b);
int16_t __unorddf2(double a, double b);

/* Truncates toward zero, saturating out-of-range values (NaN -> 0). */
int64_t __mspabi_fixdlli(double d)
{
    const unpacked a = unpack64(bits_d(d));
    uint64_t m;
    if (a.kind == 3 || a.kind == 0 || a.e < 1023) return 0;
    if (a.kind == 2 || a.e >= 1023 + 63) {
        if (a.sign && a.kind == 1 && a.e == 1023 + 63 && a.sig == TOP) return INT64_MIN;
        return a.sign ? INT64_MIN : INT64_MAX;
    }
    /* value = sig * 2^(e - 1023 - 62): shift right when e - 1023 < 62, left otherwise */
    if (a.e - 1023 <= 62) m = a.sig >> (62 - (a.e - 1023));
    else m = a.sig << ((a.e - 1023) - 62);
    return a.sign ? (int64_t)((uint64_t)0 - m) : (int64_t)m;
}

double __mspabi_fltllid(int64_t v)
{
    const uint8_t sign = v < 0;
    uint64_t m = sign ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int16_t e = 1023 + 62;
    if (m == 0u) return from_bits_d(0);
    if (m >> 63) {                     /* only INT64_MIN: keep a sticky bit while halving */
        m = shift_right_jam(m, 1);
        e++;
    }
    while (m < TOP) { m <<= 1; e--; }
    return from_bits_d(round_pack64(sign, e, m));
}

int16_t __unordsf2(float a, float b)
{
    return (unpack64(f32_to_f64(bits_f(a))).kind == 3) || (unpack64(f32_to_f64(bits_f(b))).kind == 3);
}

int16_t __unorddf2(double a, double b)
{
    return (unpack64(bits_d(a)).kind == 3) || (unpack64(bits_d(b)).kind == 3);
}
