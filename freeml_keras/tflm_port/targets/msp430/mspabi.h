/* Declarations of the MSP430 run-time helpers written in C (mspabi_int.c, mspabi_float.c) for -Wall
 * -Wextra builds; the compiler calls them by name. */
#ifndef FREEML_MSP430_MSPABI_H
#define FREEML_MSP430_MSPABI_H

#include <stdint.h>

uint32_t fm_mul16x16(uint16_t a, uint16_t b);
uint64_t fm_udiv64(uint64_t n, uint64_t d, uint64_t *rem);
int16_t __mspabi_mpyi(int16_t a, int16_t b);
int32_t __mspabi_mpyl(int32_t a, int32_t b);
uint64_t fm_mpyll(uint64_t a, uint64_t b);
uint16_t __mspabi_divu(uint16_t a, uint16_t b);
uint16_t __mspabi_remu(uint16_t a, uint16_t b);
uint32_t __mspabi_divul(uint32_t a, uint32_t b);
uint32_t __mspabi_remul(uint32_t a, uint32_t b);
int16_t __mspabi_divi(int16_t a, int16_t b);
int16_t __mspabi_remi(int16_t a, int16_t b);
int32_t __mspabi_divli(int32_t a, int32_t b);
int32_t __mspabi_remli(int32_t a, int32_t b);
uint64_t fm_divull(uint64_t a, uint64_t b);
uint64_t fm_remull(uint64_t a, uint64_t b);
int64_t fm_divlli(int64_t a, int64_t b);
int64_t fm_remlli(int64_t a, int64_t b);
int64_t __ashldi3(int64_t a, int16_t n);
uint64_t __lshrdi3(uint64_t a, int16_t n);
int64_t __ashrdi3(int64_t a, int16_t n);

/* IEEE 754 binary64 / binary32 on bit patterns, round to nearest even (mspabi_float.c). */
uint64_t fm_f64_add(uint64_t a, uint64_t b);
uint64_t fm_f64_sub(uint64_t a, uint64_t b);
uint64_t fm_f64_mul(uint64_t a, uint64_t b);
uint64_t fm_f64_div(uint64_t a, uint64_t b);
int16_t fm_f64_cmp(uint64_t a, uint64_t b);

#endif
