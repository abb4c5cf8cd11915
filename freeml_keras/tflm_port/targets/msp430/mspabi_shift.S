; 32-bit shifts by a variable count (MSP430 EABI: value in R12 (low) : R13 (high), count in R14,
; result in R12:R13). The MSP430 shifts one bit per instruction, so: a word move when the count
; is 16 or more, then a two-instruction step per remaining bit (RRA/RRC or RLA/RLC through the
; carry). In assembly because clang turns the C form into a loop of 32-bit operations about ten
; times slower. Counts are taken modulo 32.

    .section .text.__mspabi_sral,"ax",@progbits
    .global __mspabi_sral
__mspabi_sral:                          ; arithmetic shift right
    and.w   #31, r14
    jz      3f
    cmp.w   #16, r14
    jlo     2f
    mov.w   r13, r12                    ; by 16: high word down, high = sign
    clr.w   r13
    tst.w   r12
    jge     1f
    mov.w   #-1, r13
1:  sub.w   #16, r14
    jz      3f
2:  rra.w   r13
    rrc.w   r12
    dec.w   r14
    jnz     2b
3:  ret

    .section .text.__mspabi_srll,"ax",@progbits
    .global __mspabi_srll
__mspabi_srll:                          ; logical shift right
    and.w   #31, r14
    jz      3f
    cmp.w   #16, r14
    jlo     2f
    mov.w   r13, r12
    clr.w   r13
    sub.w   #16, r14
    jz      3f
2:  clrc
    rrc.w   r13
    rrc.w   r12
    dec.w   r14
    jnz     2b
3:  ret

    .section .text.__mspabi_slll,"ax",@progbits
    .global __mspabi_slll
__mspabi_slll:                          ; shift left
    and.w   #31, r14
    jz      3f
    cmp.w   #16, r14
    jlo     2f
    mov.w   r12, r13
    clr.w   r12
    sub.w   #16, r14
    jz      3f
2:  rla.w   r12
    rlc.w   r13
    dec.w   r14
    jnz     2b
3:  ret
