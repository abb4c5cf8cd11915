/* Cortex-M4F start-up for QEMU's mps2-an386 board: the vector table (initial stack pointer,
 * reset and fault handlers), .data copy, .bss clear, FPU enable, then main() and
 * fm_target_exit(). No C library start-up code is used. */
#include <stdint.h>

#include "fm_target.h"

extern uint32_t __stack_top[];
extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
int main(void);

void fm_reset_handler(void);
void fm_fault_handler(void);

void fm_reset_handler(void)
{
    uint32_t *src = __data_load, *dst = __data_start;
    while (dst < __data_end) *dst++ = *src++;
    for (dst = __bss_start; dst < __bss_end; dst++) *dst = 0u;
    /* CPACR: full access to CP10 / CP11 (the FPU), then make it visible to what follows */
    *(volatile uint32_t *)0xE000ED88u |= (uint32_t)0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    fm_target_exit(main());
}

/* Any fault or unexpected interrupt: report and stop (exit status 3). */
void fm_fault_handler(void)
{
    fm_target_puts("\n@fault\n");
    fm_target_exit(3);
}

typedef void (*fm_vector)(void);

__attribute__((section(".vectors"), used)) static const fm_vector vectors[16] = {
    (fm_vector)(uintptr_t)__stack_top,
    fm_reset_handler,
    fm_fault_handler, /* NMI */
    fm_fault_handler, /* HardFault */
    fm_fault_handler, /* MemManage */
    fm_fault_handler, /* BusFault */
    fm_fault_handler, /* UsageFault */
    0, 0, 0, 0,
    fm_fault_handler, /* SVCall */
    fm_fault_handler, /* DebugMon */
    0,
    fm_fault_handler, /* PendSV */
    fm_fault_handler, /* SysTick */
};
