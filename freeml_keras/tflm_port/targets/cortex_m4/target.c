/* fm_target.h for the Cortex-M4 under QEMU: ARM semihosting (BKPT 0xAB) for output
 * (SYS_WRITEC) and exit (SYS_EXIT_EXTENDED with the status). QEMU needs
 * -semihosting-config enable=on,target=native. */
#include "fm_target.h"

static uint32_t semihost(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void fm_target_putc(char c)
{
    semihost(0x03u, &c);                                        /* SYS_WRITEC */
}

__attribute__((noinline)) void fm_target_mark(void)
{
    __asm__ volatile("" ::: "memory");
}

void fm_target_exit(int code)
{
    /* ADS_Stopped_ApplicationExit (0x20026) with the status as subcode */
    const uint32_t block[2] = {0x20026u, (uint32_t)code};
    fm_target_putc('\n');
    for (;;) semihost(0x20u, block);                            /* SYS_EXIT_EXTENDED */
}
