/* fm_target.h for the MSP430 under `mspdebug sim`: output through the simulator's console
 * peripheral (`simio add console`, a byte register at FM_MSP430_CONSOLE, default 0x00FF, an
 * unused peripheral address on the FR5994), exit by spinning at fm_target_halt, where the
 * driver has set a breakpoint. (A spin, not CPUOFF: a simulator "run" from a CPU-off state never
 * returns, while one from the spin loop stops again at once.) */
#include "fm_target.h"

#ifndef FM_MSP430_CONSOLE
#define FM_MSP430_CONSOLE 0x00FFu
#endif

void fm_target_putc(char c)
{
    *(volatile uint8_t *)(uintptr_t)FM_MSP430_CONSOLE = (uint8_t)c;
}

__attribute__((noinline)) void fm_target_mark(void)
{
    __asm__ volatile("" ::: "memory");
}

/* Reached with the exit status in r12 (the driver reads it from the register dump). */
void fm_target_halt(int code);
__attribute__((noinline, noreturn)) void fm_target_halt(int code)
{
    for (;;) __asm__ volatile("" : : "r"(code) : "memory");   /* keeps `code` live in r12 */
}

void fm_target_exit(int code)
{
    fm_target_putc('\n');
    fm_target_halt(code);
}
