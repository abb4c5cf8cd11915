/* Integer run-time helpers that clang --target=msp430 calls (MSP430 EABI names, section 6.2):
 * multiply, divide / remainder and 64-bit shifts (32-bit shifts: mspabi_shift.S). Written here because Debian ships no
 * MSP430 libgcc or compiler-rt.
 *
 * With FM_MSP430_HWMULT=1 every multiply is built from the hardware multiplier's 16x16 -> 32
 * product (hwmult.h); with FM_MSP430_HWMULT=0 from a shift-and-add loop (the "software
 * multiply" baseline). The 64-bit multiply / divide helpers use LLVM's special MSP430 calling
 * convention (operands in R8:R11 and R12:R15): mspabi_builtin.S adapts them to the C functions
 * fm_mpyll / fm_divull / ... below. */
#include <stdint.h>

#include "hwmult.h"
#include "mspabi.h"

#if defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
uint32_t fm_mul16x16(uint16_t a, uint16_t b)
{
    FM_MPY = a;
    FM_OP2 = b;
    return ((uint32_t)FM_RESHI << 16) | FM_RESLO;
}

int16_t __mspabi_mpyi(int16_t a, int16_t b)
{
    FM_MPY = (uint16_t)a;
    FM_OP2 = (uint16_t)b;
    return (int16_t)FM_RESLO;
}
#else
uint32_t fm_mul16x16(uint16_t a, uint16_t b)
{
    uint32_t acc = 0, x = a;
    while (b) {
        if (b & 1u) acc += x;
        x <<= 1;
        b >>= 1;
    }
    return acc;
}

int16_t __mspabi_mpyi(int16_t a, int16_t b)
{
    uint16_t acc = 0, x = (uint16_t)a, y = (uint16_t)b;
    while (y) {
        if (y & 1u) acc = (uint16_t)(acc + x);
        x = (uint16_t)(x << 1);
        y >>= 1;
    }
    return (int16_t)acc;
}
#endif

/* Low 32 bits of a 32x32 product: one full 16x16 product and the low halves of the two cross
 * products. */
int32_t __mspabi_mpyl(int32_t a, int32_t b)
{
    const uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
    const uint16_t al = (uint16_t)ua, ah = (uint16_t)(ua >> 16);
    const uint16_t bl = (uint16_t)ub, bh = (uint16_t)(ub >> 16);
    uint32_t r = fm_mul16x16(al, bl);
    const uint16_t cross = (uint16_t)((uint16_t)fm_mul16x16(al, bh) + (uint16_t)fm_mul16x16(ah, bl));
    r += (uint32_t)cross << 16;
    return (int32_t)r;
}

/* Unsigned 32x32 -> 64 product from four 16x16 products, combined in 16/32-bit pieces (64-bit
 * additions and shifts are long instruction sequences on the MSP430). */
static uint64_t mul32x32(uint32_t a, uint32_t b)
{
    const uint16_t al = (uint16_t)a, ah = (uint16_t)(a >> 16);
    const uint16_t bl = (uint16_t)b, bh = (uint16_t)(b >> 16);
    const uint32_t p0 = fm_mul16x16(al, bl), p1 = fm_mul16x16(al, bh);
    const uint32_t p2 = fm_mul16x16(ah, bl), p3 = fm_mul16x16(ah, bh);
    const uint32_t mid = (p0 >> 16) + (uint16_t)p1 + (uint16_t)p2;      /* < 3 * 2^16 */
    const uint32_t hi = p3 + (p1 >> 16) + (p2 >> 16) + (mid >> 16);   /* no overflow: a*b < 2^64 */
    return ((uint64_t)hi << 32) | ((uint32_t)(uint16_t)mid << 16) | (uint16_t)p0;
}

/* Does v hold a sign-extended 32-bit value? */
static int fits32(uint64_t v)
{
    const uint32_t hi = (uint32_t)(v >> 32);
    return hi == ((uint32_t)v & 0x80000000u ? 0xFFFFFFFFu : 0u);
}

/* Low 64 bits of a 64x64 product. The common case in the runtime is (int64_t)a * b with 32-bit
 * a and b (the fixed-point requantization): four 16x16 products on magnitudes. Otherwise 16-bit
 * limbs, schoolbook, columns 0..3. */
uint64_t fm_mpyll(uint64_t a, uint64_t b)
{
    uint16_t x[4], y[4], r[4] = {0, 0, 0, 0};
    uint8_t i, j;
    if (fits32(a) && fits32(b)) {
        const int32_t sa = (int32_t)(uint32_t)a, sb = (int32_t)(uint32_t)b;
        const uint64_t m = mul32x32(sa < 0 ? (uint32_t)0 - (uint32_t)sa : (uint32_t)sa,
                                    sb < 0 ? (uint32_t)0 - (uint32_t)sb : (uint32_t)sb);
        return ((sa < 0) != (sb < 0)) ? (uint64_t)0 - m : m;
    }
    for (i = 0; i < 4; i++) {
        x[i] = (uint16_t)(a >> (16u * i));
        y[i] = (uint16_t)(b >> (16u * i));
    }
    for (i = 0; i < 4; i++) {
        uint32_t carry = 0;
        if (x[i] == 0u) continue;
        for (j = 0; (uint8_t)(i + j) < 4u; j++) {
            const uint32_t t = fm_mul16x16(x[i], y[j]) + r[i + j] + carry;
            r[i + j] = (uint16_t)t;
            carry = t >> 16;
        }
    }
    return (uint64_t)r[0] | ((uint64_t)r[1] << 16) | ((uint64_t)r[2] << 32) | ((uint64_t)r[3] << 48);
}

/* ---- division: restoring shift-subtract, the dividend shifted out at the top while the
 * quotient bits shift in at the bottom (only constant one-bit shifts: a variable shift is itself
 * a helper call on the MSP430). Division by zero returns all ones (C leaves it undefined; this
 * keeps the helpers total). */
static uint16_t udiv16(uint16_t n, uint16_t d, uint16_t *rem)
{
    uint16_t r = 0;
    uint8_t i;
    if (d == 0u) { *rem = n; return 0xFFFFu; }
    for (i = 0; i < 16u; i++) {
        r = (uint16_t)((r << 1) | (n >> 15));
        n = (uint16_t)(n << 1);
        if (r >= d) { r = (uint16_t)(r - d); n |= 1u; }
    }
    *rem = r;
    return n;
}

static uint32_t udiv32(uint32_t n, uint32_t d, uint32_t *rem)
{
    uint32_t r = 0;
    uint8_t i;
    if (d == 0u) { *rem = n; return 0xFFFFFFFFu; }
    if ((n >> 16) == 0u && (d >> 16) == 0u) {           /* common case: 16-bit operands */
        uint16_t r16;
        const uint16_t q16 = udiv16((uint16_t)n, (uint16_t)d, &r16);
        *rem = r16;
        return q16;
    }
    for (i = 0; i < 32u; i++) {
        r = (r << 1) | (n >> 31);
        n <<= 1;
        if (r >= d) { r -= d; n |= 1u; }
    }
    *rem = r;
    return n;
}

uint64_t fm_udiv64(uint64_t n, uint64_t d, uint64_t *rem)
{
    uint64_t r = 0;
    uint8_t i;
    if (d == 0u) { *rem = n; return ~(uint64_t)0; }
    for (i = 0; i < 64u; i++) {
        r = (r << 1) | (n >> 63);
        n <<= 1;
        if (r >= d) { r -= d; n |= 1u; }
    }
    *rem = r;
    return n;
}

uint16_t __mspabi_divu(uint16_t a, uint16_t b) { uint16_t r; return udiv16(a, b, &r); }
uint16_t __mspabi_remu(uint16_t a, uint16_t b) { uint16_t r; (void)udiv16(a, b, &r); return r; }
uint32_t __mspabi_divul(uint32_t a, uint32_t b) { uint32_t r; return udiv32(a, b, &r); }
uint32_t __mspabi_remul(uint32_t a, uint32_t b) { uint32_t r; (void)udiv32(a, b, &r); return r; }

int16_t __mspabi_divi(int16_t a, int16_t b)
{
    uint16_t r;
    const uint16_t q = udiv16(a < 0 ? (uint16_t)-(uint16_t)a : (uint16_t)a,
                              b < 0 ? (uint16_t)-(uint16_t)b : (uint16_t)b, &r);
    return (int16_t)(((a < 0) != (b < 0)) ? (uint16_t)-q : q);
}

int16_t __mspabi_remi(int16_t a, int16_t b)
{
    uint16_t r;
    (void)udiv16(a < 0 ? (uint16_t)-(uint16_t)a : (uint16_t)a,
                 b < 0 ? (uint16_t)-(uint16_t)b : (uint16_t)b, &r);
    return (int16_t)(a < 0 ? (uint16_t)-r : r);
}

int32_t __mspabi_divli(int32_t a, int32_t b)
{
    uint32_t r;
    const uint32_t q = udiv32(a < 0 ? (uint32_t)0 - (uint32_t)a : (uint32_t)a,
                              b < 0 ? (uint32_t)0 - (uint32_t)b : (uint32_t)b, &r);
    return (int32_t)(((a < 0) != (b < 0)) ? (uint32_t)0 - q : q);
}

int32_t __mspabi_remli(int32_t a, int32_t b)
{
    uint32_t r;
    (void)udiv32(a < 0 ? (uint32_t)0 - (uint32_t)a : (uint32_t)a,
                 b < 0 ? (uint32_t)0 - (uint32_t)b : (uint32_t)b, &r);
    return (int32_t)(a < 0 ? (uint32_t)0 - r : r);
}

uint64_t fm_divull(uint64_t a, uint64_t b) { uint64_t r; return fm_udiv64(a, b, &r); }
uint64_t fm_remull(uint64_t a, uint64_t b) { uint64_t r; (void)fm_udiv64(a, b, &r); return r; }

int64_t fm_divlli(int64_t a, int64_t b)
{
    uint64_t r;
    const uint64_t q = fm_udiv64(a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a,
                                 b < 0 ? (uint64_t)0 - (uint64_t)b : (uint64_t)b, &r);
    return (int64_t)(((a < 0) != (b < 0)) ? (uint64_t)0 - q : q);
}

int64_t fm_remlli(int64_t a, int64_t b)
{
    uint64_t r;
    (void)fm_udiv64(a < 0 ? (uint64_t)0 - (uint64_t)a : (uint64_t)a,
                    b < 0 ? (uint64_t)0 - (uint64_t)b : (uint64_t)b, &r);
    return (int64_t)(a < 0 ? (uint64_t)0 - r : r);
}

/* ---- 32-bit shifts by a variable amount: mspabi_shift.S. */

/* 64-bit shifts (compiler-rt names; clang calls them with the C convention). */
int64_t __ashldi3(int64_t a, int16_t n)
{
    uint64_t v = (uint64_t)a;
    n &= 63;
    for (; n >= 16; n -= 16) v <<= 16;
    for (; n > 0; n--) v <<= 1;
    return (int64_t)v;
}

uint64_t __lshrdi3(uint64_t a, int16_t n)
{
    n &= 63;
    for (; n >= 16; n -= 16) a >>= 16;
    for (; n > 0; n--) a >>= 1;
    return a;
}

int64_t __ashrdi3(int64_t a, int16_t n)
{
    uint64_t v = (uint64_t)a;
    const uint64_t fill = (a < 0) ? ~(uint64_t)0 : 0u;
    n &= 63;
    for (; n >= 16; n -= 16) v = (v >> 16) | (fill << 48);
    for (; n > 0; n--) v = (v >> 1) | (fill << 63);
    return (int64_t)v;
}
