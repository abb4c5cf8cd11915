/* The C library functions the compiler and the runtime call (there is no libc for
 * clang --target=msp430 in Debian). Built with -ffreestanding so that clang does not turn these
 * loops back into calls to themselves. */
#include <stddef.h>
#include <stdint.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

void *memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 1u) == 0u) {       /* both word aligned: words */
        uint16_t *dw = (uint16_t *)(void *)d;
        const uint16_t *sw = (const uint16_t *)(const void *)s;
        for (; n >= 2u; n -= 2u) *dw++ = *sw++;
        d = (uint8_t *)dw;
        s = (const uint8_t *)sw;
    }
    while (n--) *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if (d <= s || d >= s + n) return memcpy(dst, src, n);
    while (n--) d[n] = s[n];
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    uint8_t *d = (uint8_t *)dst;
    if (((uintptr_t)d & 1u) == 0u) {                        /* word aligned: words (the compiler
                                                              * merges zeroed fields into calls
                                                              * here, on the restart path too) */
        uint16_t *dw = (uint16_t *)(void *)d;
        const uint16_t w = (uint16_t)((uint8_t)c * 0x0101u);
        for (; n >= 2u; n -= 2u) *dw++ = w;
        d = (uint8_t *)dw;
    }
    while (n--) *d++ = (uint8_t)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (; n; n--, x++, y++)
        if (*x != *y) return *x < *y ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
