/* The part of <string.h> the project uses (clang has no C library for msp430); the functions
 * are in libc.c. */
#ifndef FREEML_MSP430_STRING_H
#define FREEML_MSP430_STRING_H

#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

#endif
