; Start-up code for the MSP430FR5994 (clang --target=msp430, no C library): set the stack,
; stop the watchdog, copy .data from FRAM to SRAM, clear .bss, call main(), then
; fm_target_exit(main's return value).
    .section .text.crt0,"ax",@progbits
    .global _start
_start:
    mov.w   #__stack_top, r1
    mov.w   #0x5a80, &0x015c        ; WDTCTL = WDTPW | WDTHOLD
    ; .data: FRAM image -> SRAM, and .bss: zero; word by word (the linker script aligns both
    ; to 2 bytes). Every power-on of a batteryless device pays for this loop: a byte loop cost
    ; about 10 cycles per byte.
    mov.w   #__data_load, r12
    mov.w   #__data_start, r13
1:  cmp.w   #__data_end, r13
    jhs     2f
    mov.w   @r12+, r14
    mov.w   r14, 0(r13)
    incd.w  r13
    jmp     1b
2:  mov.w   #__bss_start, r13
3:  cmp.w   #__bss_end, r13
    jhs     4f
    mov.w   #0, 0(r13)
    incd.w  r13
    jmp     3b
4:  call    #main
    call    #fm_target_exit

    ; The reset vector (the last word of the vector table).
    .section .resetvec,"a",@progbits
    .word   _start
