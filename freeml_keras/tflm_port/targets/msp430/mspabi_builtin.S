; Adapters for the helpers that LLVM calls with its MSP430_BUILTIN convention (first 64-bit
; operand in R8:R11, second in R12:R15, result in R12:R15): push the second operand where the
; C convention expects it (the stack, least significant word first), move the first to
; R12:R15 and call the C implementation. R8-R10 are only read (they are callee-saved).
    .macro FM_BUILTIN2 name, impl
    .section .text.\name,"ax",@progbits
    .global \name
\name:
    push.w  r15
    push.w  r14
    push.w  r13
    push.w  r12
    mov.w   r8, r12
    mov.w   r9, r13
    mov.w   r10, r14
    mov.w   r11, r15
    call    #\impl
    add.w   #8, r1
    ret
    .endm

    FM_BUILTIN2 __mspabi_mpyll, fm_mpyll
    FM_BUILTIN2 __mspabi_divull, fm_divull
    FM_BUILTIN2 __mspabi_remull, fm_remull
    FM_BUILTIN2 __mspabi_divlli, fm_divlli
    FM_BUILTIN2 __mspabi_remlli, fm_remlli
    FM_BUILTIN2 __mspabi_addd, fm_f64_add
    FM_BUILTIN2 __mspabi_subd, fm_f64_sub
    FM_BUILTIN2 __mspabi_mpyd, fm_f64_mul
    FM_BUILTIN2 __mspabi_divd, fm_f64_div
    FM_BUILTIN2 __mspabi_cmpd, fm_f64_cmp
