; The MSP430's hardware multiplier in assembly: the int8 MAC loop of the convolutions and fully
; connected layers (fm_dot_s8_rows_hwmult, fm_dot.h), and the requantization: fm_requant_s8, fm_mul_by_qm, fm_srdhm
; and fm_rdbpot of fm_math.h, bit for bit TFLite's MultiplyByQuantizedMultiplier / SaturatingRoundingDoubleHighMul
; (math.c has the C definitions; it leaves these out of MSP430 builds with the multiplier).
;
; Why assembly: the 32x32 -> 64-bit product needs add-with-carry chains, which clang's MSP430
; back end spells as compare-and-set sequences (about 500 bytes and 2,000 cycles per output
; value from C); here it is about 100 cycles and 200 bytes.
;
; Method (sign and magnitude): |a| * |b| from three multiplier operations (lo*lo, the two cross
; products accumulated in MAC mode: each is < 2^31 because both magnitudes are <= 2^31, so
; their sum fits 32 bits, and hi*hi); TFLite's nudge (2^30, or 2^30 - 1 for a negative product)
; is added and bits 31..62 taken: q = round(|ab| / 2^31), ties away from zero, then the sign.
; The rounding right shift of MultiplyByQuantizedMultiplier, round half away from zero, works on
; the magnitude the same way for both signs: (q + 2^(r-1)) >> r = ((q >> (r-1)) + 1) >> 1.
; MSP430 EABI: a in R12:R13, b in R14:R15, shift (int32) on the stack; result in R12:R13;
; R11..R15 are the caller's, R9/R10 are saved here.
#if defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT

#ifndef FM_MSP430_MPY_BASE
#define FM_MSP430_MPY_BASE 0x04C0
#endif
#define MPY   (FM_MSP430_MPY_BASE + 0x0)
#define MACS  (FM_MSP430_MPY_BASE + 0x6)
#define MAC   (FM_MSP430_MPY_BASE + 0x4)
#define OP2   (FM_MSP430_MPY_BASE + 0x8)
#define RESLO (FM_MSP430_MPY_BASE + 0xA)
#define RESHI (FM_MSP430_MPY_BASE + 0xC)

; int32_t fm_dot_s8_rows_hwmult(const int8_t *x, ptrdiff_t x_step, const int8_t *w, uint16_t n,
;                               uint16_t rows, int16_t x_offset, int32_t acc)
;   x in R12, x_step in R13, w in R14, n in R15; rows, x_offset, acc on the stack. Signed
;   multiply-accumulate (MACS) into the multiplier's 32-bit accumulator, operands read with
;   auto-increment (clang's C loop cannot): 16.5 cycles per MAC, unrolled by 2.
    .section .text.fm_dot_s8_rows_hwmult,"ax",@progbits
    .global fm_dot_s8_rows_hwmult
    .type   fm_dot_s8_rows_hwmult, @function
fm_dot_s8_rows_hwmult:
    push.w  r10
    push.w  r9
    push.w  r8
    mov.w   12(r1), &RESLO              ; preload the accumulator
    mov.w   14(r1), &RESHI
    mov.w   10(r1), r10                 ; x_offset
    mov.w   8(r1), r9                   ; rows
    sub.w   r15, r13                    ; x_step - n: from the end of one input run to the next
    tst.w   r9
    jz      4f
1:  mov.w   r15, r8
    bit.w   #1, r8
    jz      2f
    mov.b   @r12+, r11                  ; odd n: one MAC first
    sxt     r11
    add.w   r10, r11
    mov.w   r11, &MACS
    mov.b   @r14+, r11
    sxt     r11
    mov.w   r11, &OP2
2:  clrc
    rrc.w   r8                          ; pairs
    jz      3f
5:  mov.b   @r12+, r11
    sxt     r11
    add.w   r10, r11
    mov.w   r11, &MACS
    mov.b   @r14+, r11
    sxt     r11
    mov.w   r11, &OP2
    mov.b   @r12+, r11
    sxt     r11
    add.w   r10, r11
    mov.w   r11, &MACS
    mov.b   @r14+, r11
    sxt     r11
    mov.w   r11, &OP2
    dec.w   r8
    jnz     5b
3:  add.w   r13, r12                    ; next input run
    dec.w   r9
    jnz     1b
4:  mov.w   &RESLO, r12
    mov.w   &RESHI, r13
    pop.w   r8
    pop.w   r9
    pop.w   r10
    ret
    .size   fm_dot_s8_rows_hwmult, .-fm_dot_s8_rows_hwmult

; fm_requant_s8's fast path (its own section below describes it) as a macro: mult's words at \lo
; and \hi (the stack for fm_requant_s8, a pointer for fm_px_hwmult), the other shifts at
; \general, the result in R12 at \done (ret: returned). FM_RQ_DONE: the end of the fast path.
.macro FM_RQ_DONE done
.ifc \done, ret
    ret
.else
    jmp     \done
.endif
.endm
.macro FM_RQ_FAST lo, hi, general, done=ret
    add.w   #15, r15                    ; shift + 15: 0 .. 13 for shifts -15 .. -2
    cmp.w   #14, r15
    jhs     \general                   ; the other shifts: general
    rla.w   r15                         ; the tables' index
    tst.w   r13
    jge     1f
    cmp.w   @r14, 4(r14)                ; acc < 0 gives v <= 0 (mult >= 0): with min >= off (a
    jge     11f                         ; fused ReLU) the output is min, no multiply
    inv.w   r12                         ; |acc|
    inv.w   r13
    inc.w   r12
    adc.w   r13
    inc.w   r14                         ; negative: q | 1
1:  mov.w   r12, &MPY                   ; al * ml
    mov.w   \lo, &OP2
    mov.w   &RESHI, r12                 ; word 1, so far
    mov.w   #0x4000, r11                ; the nudge's word 1: 0x4000, or for a negative product
    bit.w   #1, r14                     ; 0x3FFF + (word 0 != 0)
    jz      2f
    cmp.w   #1, &RESLO                  ; carry = word 0 != 0
    subc.w  #0, r11                     ; 0x4000 - 1 + carry
2:  add.w   r11, r12                    ; word 1 + nudge, its carry into word 2:
    mov.w   #0, r11                     ; (mov keeps the carry)
    adc.w   r11
    mov.w   \hi, &OP2                 ; al * mh (operand 1 kept)
    tst.w   r13
    jnz     5f                          ; |acc| >= 2^16: the ah products
    add.w   &RESLO, r12                 ; word 1: only its carry is used
    addc.w  &RESHI, r11                 ; word 2 (word 3 is 0)
    add.w   fm_rq_rnd(r15), r11         ; + 2^(r-2): < 2^15 + 2^13, no carry
    mov.w   r11, &MPY
    mov.w   fm_rq_k(r15), &OP2          ; * 2^(17-r): the high word is >> (r - 1)
    mov.w   &RESHI, r12                 ; the magnitude, < 2^15
3:  cmp.w   #0x4000, r12
    jhs     12f                         ; saturated whatever the offset
    bit.w   #1, r14
    jz      4f
    dec.w   r14                         ; negative
    inv.w   r12
    inc.w   r12
4:  add.w   @r14, r12                   ; + off (int8 zero point: low word)
    cmp.w   4(r14), r12
    jl      11f                         ; v < min
    cmp.w   r12, 8(r14)
    jl      14f                         ; max < v
    FM_RQ_DONE \done
5:  mov.w   r13, &MAC                   ; + ah * ml: al * mh + ah * ml < 2^32
    mov.w   \lo, &OP2
    add.w   &RESLO, r12                 ; word 1's carry
    addc.w  &RESHI, r11                 ; word 2, so far
    mov.w   r13, &MPY                   ; ah * mh (movs keep the carry)
    mov.w   \hi, &OP2
    mov.w   &RESHI, r13                 ; word 3
    adc.w   r13
    add.w   &RESLO, r11                 ; word 2
    adc.w   r13
    add.w   fm_rq_rnd(r15), r11         ; + 2^(r-2)
    adc.w   r13
    mov.w   fm_rq_k(r15), r15
    mov.w   r11, &MPY                   ; (word 3 : word 2) >> (r - 1) = w3 * 2^(17-r) + high(w2 * 2^(17-r))
    mov.w   r15, &OP2
    mov.w   &RESHI, r12
    tst.w   r13
    jz      3b                          ; word 3 is often 0
    mov.w   r13, &MPY
    mov.w   r15, &OP2
    add.w   &RESLO, r12
    jc      12f                         ; >= 2^16: saturated
    tst.w   &RESHI
    jz      3b
12: bit.w   #1, r14                     ; saturated: max, or min when negative
    jz      14f
    dec.w   r14
11: mov.w   4(r14), r12                 ; min
    FM_RQ_DONE \done
14: mov.w   8(r14), r12                 ; max
    FM_RQ_DONE \done
.endm

; void fm_px_hwmult(const int8_t *x, const int8_t *w, const fm_px_hwmult_t *c, int8_t *o, uint16_t n_out)
;   n_out (>= 1) output values of one pixel (CONV_2D, window inside the input) or one batch row
;   (FULLY_CONNECTED), one per output channel: acc0[oc] (0 when acc0 is NULL) + the dot product of
;   the channel's weights (contiguous from w, channel after channel) with c->rows runs of
;   c->row_len input values (x_off added to each), the runs c->row_skip bytes apart after their
;   end; then fm_requant_s8 (inline) with the channel's mult and shift. x in R12, w in R13, c in
;   R14, o in R15, n_out on the stack. fm_px_hwmult_t (fm_dot.h): acc0 0, mult 2, shift 4, out 6,
;   row_skip 8, row_len 10, rows 12, x_off 14. The window (rows * row_len values, 1 ..
;   FM_PX_GATHER: the caller checks, fm_dot.h's FM_PX_MAX) is gathered once per call into a
;   buffer on the stack as 16-bit operands with x_off added, so that per channel the loop is one
;   run with one move per input value (mov @Rn+, &MACS); the per-channel accumulator start,
;   multiplier and shift step in registers. One call per pixel instead of one per value.
; Frame: 0(r1) the window's length, 6(r1) the window's values, 6 + 2 * FM_PX_GATHER: r4 .. r10,
;   then the return address and n_out.
#define FM_PX_GATHER 32
#define PX_BUF 6
#define PX_NOUT 86                      /* 6 + 2 * FM_PX_GATHER + 16 (clang's assembler drops an
                                         * instruction whose offset is a parenthesized expression) */
; mov.w @Rn+, &addr: clang's MSP430 assembler refuses the operand pair (the CPU has it: format I,
; As = 3, Ad = 1 with R2, 5 cycles); spelled as its two words.
#define MOV_POSTINC_ABS(rn, addr) .short 0x40B2 | ((rn) << 8), (addr)
    .section .text.fm_px_hwmult,"ax",@progbits
    .global fm_px_hwmult
    .type   fm_px_hwmult, @function
fm_px_hwmult:
    push.w  r10
    push.w  r9
    push.w  r8
    push.w  r7
    push.w  r6
    push.w  r5
    push.w  r4
    sub.w   #(6 + 2 * FM_PX_GATHER), r1
    mov.w   r12, r7                     ; x
    mov.w   r13, r5                     ; w, stepped through all channels
    mov.w   r14, r4                     ; c
    mov.w   r15, r6                     ; o
    mov.w   12(r4), r10                 ; rows
; the window once as 16-bit operands, then each channel over it in one run
    mov.w   r1, r8
    add.w   #PX_BUF, r8                 ; the buffer
    mov.w   r7, r13                     ; input run
    mov.w   14(r4), r11                 ; x_off
21: mov.w   10(r4), r9
22: mov.b   @r13+, r12
    sxt     r12
    add.w   r11, r12
    mov.w   r12, 0(r8)
    incd.w  r8
    dec.w   r9
    jnz     22b
    add.w   8(r4), r13
    dec.w   r10
    jnz     21b
    sub.w   r1, r8
    sub.w   #PX_BUF, r8
    rra.w   r8
    mov.w   r8, 0(r1)                   ; the window's length (1 .. FM_PX_GATHER)
    mov.w   @r4, r7                     ; acc0 (x is not read any more)
    mov.w   2(r4), r9                   ; mult, as the inline FM_RQ_FAST reads it
    mov.w   4(r4), r10                  ; shift
23: tst.w   r7                          ; the channel's accumulator
    jz      24f
    MOV_POSTINC_ABS(7, RESLO)
    MOV_POSTINC_ABS(7, RESHI)
    jmp     25f
24: mov.w   #0, &RESLO
    mov.w   #0, &RESHI
25: mov.w   r1, r8
    add.w   #PX_BUF, r8
    mov.w   @r1, r13
    bit.w   #1, r13
    jz      26f
    MOV_POSTINC_ABS(8, MACS)            ; odd: one MAC first
    mov.b   @r5+, r12
    sxt     r12
    mov.w   r12, &OP2
26: rra.w   r13
    jz      28f
27: MOV_POSTINC_ABS(8, MACS)
    mov.b   @r5+, r12
    sxt     r12
    mov.w   r12, &OP2
    MOV_POSTINC_ABS(8, MACS)
    mov.b   @r5+, r12
    sxt     r12
    mov.w   r12, &OP2
    dec.w   r13
    jnz     27b
28: mov.w   &RESLO, r12                 ; requantize and store
    mov.w   &RESHI, r13
    mov.b   @r10+, r15
    sxt     r15                         ; shift
    mov.w   6(r4), r14                  ; q
    FM_RQ_FAST 0(r9), 2(r9), .Lpx_rq_general, .Lpx_rq_done
.Lpx_rq_general:
    sub.w   #15, r15                    ; the other shifts: through fm_requant_s8
    mov.w   2(r9), r11
    push.w  r11
    mov.w   @r9, r11
    push.w  r11
    call    #fm_requant_s8
    add.w   #4, r1
.Lpx_rq_done:
    add.w   #4, r9
    mov.b   r12, 0(r6)
    inc.w   r6
    dec.w   PX_NOUT(r1)
    jnz     23b
    add.w   #(6 + 2 * FM_PX_GATHER), r1
    pop.w   r4
    pop.w   r5
    pop.w   r6
    pop.w   r7
    pop.w   r8
    pop.w   r9
    pop.w   r10
    ret
    .size   fm_px_hwmult, .-fm_px_hwmult

; int32_t fm_mul_by_qm(int32_t x, int32_t multiplier, int32_t shift)
;   shift > 0: x << shift (wrapping, as TFLite); shift < 0: rounding right shift by -shift.
    .section .text.fm_requant,"ax",@progbits
    .global fm_mul_by_qm
    .type   fm_mul_by_qm, @function
fm_mul_by_qm:
    mov.w   2(r1), r11                  ; shift, -31 .. 31 (low word)
; r13:r12 = x, r15:r14 = multiplier, r11 = shift
fm_rq_shift:
    tst.w   r11
    jge     1f
    inv.w   r11                         ; right shift r11 = -shift
    inc.w   r11
    jmp     fm_rq_core
1:  jz      fm_rq_core                  ; shift 0
2:  rla.w   r12                         ; left shift, wrapping; ends with r11 = 0
    rlc.w   r13
    dec.w   r11
    jnz     2b
    jmp     fm_rq_core

; (its own section: builds that only prepare use fm_srdhm / fm_rdbpot, not this)
    .section .text.fm_requant_s8,"ax",@progbits
; int8_t fm_requant_s8(int32_t acc, const fm_out_range *q, int16_t shift, int32_t mult):
;   clamp(fm_mul_by_qm(acc, mult, shift) + q->off, q->min, q->max); acc in R12:R13, q in R14,
;   shift in R15, mult on the stack. min and max are int8 values: the sum is saturated to 16 bits
;   first, then compared in 16 bits.
; Right shifts r = 2 .. 15 (multipliers below 1/4: every convolution's and fully connected
;   layer's) take a path of their own with no calls and no saved registers. With X = |acc| * mult
;   + nudge (TFLite's 2^30, or 2^30 - 1 for a negative product), the magnitude of the result is
;   floor((floor(X / 2^31) + 2^(r-1)) / 2^r) = floor((floor(X / 2^32) + 2^(r-2)) / 2^(r-1)): only
;   the words 2 and 3 of X count (words 0 and 1 only through their carries, word 0 only through
;   whether it is 0), and the final right shift by r - 1 is one more unsigned multiplication, by
;   2^(17-r), whose high word is the quotient. Per shift the two constants come from tables
;   indexed by 2 * (shift + 15). Sign: bit 0 of the q pointer
;   (an fm_out_range is word-aligned). A negative accumulator whose range has min >= off (a
;   fused ReLU; the converter's zero point -128 for one) is min before any multiply: with
;   mult >= 0 the product is <= 0, so v + off <= off <= min. The other shifts go through
;   fm_rq_shift. The fast path is the macro FM_RQ_FAST (above), also inlined in fm_px_hwmult.

    .global fm_requant_s8
fm_requant_s8:
    FM_RQ_FAST 2(r1), 4(r1), 20f
; 2^(r-2) and 2^(17-r) for r = -shift = 15 .. 2
    .p2align 1
fm_rq_rnd:
    .short  0x2000, 0x1000, 0x0800, 0x0400, 0x0200, 0x0100, 0x0080, 0x0040
    .short  0x0020, 0x0010, 0x0008, 0x0004, 0x0002, 0x0001
fm_rq_k:
    .short  0x0004, 0x0008, 0x0010, 0x0020, 0x0040, 0x0080, 0x0100, 0x0200
    .short  0x0400, 0x0800, 0x1000, 0x2000, 0x4000, 0x8000
20: sub.w   #15, r15                    ; shift
    push.w  r14                         ; q
    mov.w   r15, r11
    mov.w   4(r1), r14                  ; mult
    mov.w   6(r1), r15
    call    #fm_rq_shift
    pop.w   r14
    add.w   0(r14), r12                 ; + q->off
    addc.w  2(r14), r13
    tst.w   r13
    jl      3f
    jnz     6f                          ; >= 2^16: max
    tst.w   r12
    jl      6f                          ; 2^15 .. 2^16 - 1: max
    jmp     4f
3:  cmp.w   #-1, r13
    jne     5f                          ; < -2^16: min
    tst.w   r12
    jge     5f                          ; -2^16 .. -2^15 - 1: min
4:  cmp.w   4(r14), r12                 ; v < min: min
    jl      5f
    mov.w   8(r14), r15
    cmp.w   r12, r15                    ; max < v: max
    jge     7f
6:  mov.w   8(r14), r12
    ret
5:  mov.w   4(r14), r12
7:  ret

    .size   fm_requant_s8, .-fm_requant_s8


    .section .text.fm_requant,"ax",@progbits
; int32_t fm_srdhm(int32_t a, int32_t b): round(a * b / 2^31); INT32_MIN * INT32_MIN -> INT32_MAX
    .global fm_srdhm
fm_srdhm:
    clr.w   r11                         ; no right shift
    cmp.w   #0x8000, r13                ; a == INT32_MIN ...
    jne     fm_rq_core
    tst.w   r12
    jne     fm_rq_core
    cmp.w   #0x8000, r15                ; ... and b == INT32_MIN
    jne     fm_rq_core
    tst.w   r14
    jne     fm_rq_core
    mov.w   #-1, r12
    mov.w   #0x7FFF, r13
    ret

; int32_t fm_rdbpot(int32_t x, int32_t exponent): x / 2^exponent rounded half away from zero
    .global fm_rdbpot
fm_rdbpot:
    mov.w   r14, r11                    ; exponent, 0 .. 31
    push.w  r10
    push.w  r9
    clr.w   r10
    mov.w   r12, r14                    ; q = |x| in r13:r14
    tst.w   r13
    jge     fm_rq_round
    inv.w   r14
    inv.w   r13
    inc.w   r14
    adc.w   r13
    inc.w   r10
    jmp     fm_rq_round

; r13:r12 = a, r15:r14 = b, r11 = rounding right shift (0 .. 31)
fm_rq_core:
    push.w  r10
    push.w  r9
    clr.w   r10                         ; r10 = 1 if the product is negative
    tst.w   r13
    jge     1f
    inv.w   r12                         ; |a| (2^31 for INT32_MIN, as unsigned)
    inv.w   r13
    inc.w   r12
    adc.w   r13
    inc.w   r10
1:  tst.w   r15
    jge     2f
    inv.w   r14                         ; |b|
    inv.w   r15
    inc.w   r14
    adc.w   r15
    xor.w   #1, r10
2:  mov.w   r12, &MPY                   ; al * bl
    mov.w   r14, &OP2
    mov.w   &RESLO, r9                  ; word 0 (only whether it is 0 matters)
    mov.w   &RESHI, r12                 ; word 1, so far
    mov.w   r15, &OP2                   ; al * bh (operand 1 kept)
    tst.w   r13
    jnz     11f
    add.w   &RESLO, r12                 ; |a| < 2^16 (most accumulators): no ah products
    mov.w   &RESHI, r14
    adc.w   r14                         ; word 2
    jmp     12f                         ; word 3 = r13 = 0
11: mov.w   r13, &MAC
    mov.w   r14, &OP2                   ; + ah * bl: < 2^32
    add.w   &RESLO, r12                 ; word 1
    mov.w   &RESHI, r14
    adc.w   r14                         ; word 2, so far (no carry out: the cross sum < 2^32 - 2^16)
    mov.w   r13, &MPY                   ; ah * bh
    mov.w   r15, &OP2
    add.w   &RESLO, r14                 ; word 2
    mov.w   &RESHI, r13
    adc.w   r13                         ; word 3
12: tst.w   r10                         ; nudge: 2^30, or 2^30 - 1 for a negative product
    jz      3f
    cmp.w   #1, r9                      ; carry = word 0 != 0 (word 0 + 0xFFFF carries)
    addc.w  #0x3FFF, r12
    jmp     4f
3:  add.w   #0x4000, r12
4:  adc.w   r14
    adc.w   r13
    rla.w   r12                         ; q = bits 31..62 into r13:r14 (< 2^31)
    rlc.w   r14
    rlc.w   r13
; q (magnitude, <= 2^31) in r13:r14, sign in r10: sign * round(q / 2^r11), ties away from zero
fm_rq_round:
    tst.w   r11                         ; rounding right shift by r11
    jz      9f
    dec.w   r11                         ; q >> (r11 - 1) ...
    cmp.w   #16, r11
    jlo     5f
    mov.w   r13, r14
    clr.w   r13
    sub.w   #16, r11
5:  cmp.w   #8, r11
    jlo     6f
    swpb    r14                         ; by 8: bytes across the two words
    swpb    r13
    mov.b   r14, r14
    mov.w   r13, r9
    and.w   #0xFF00, r9
    bis.w   r9, r14
    mov.b   r13, r13
    sub.w   #8, r11
6:  tst.w   r11
    jz      8f
7:  clrc                                ; logical: q is 2^31 for fm_rdbpot(INT32_MIN, e)
    rrc.w   r13
    rrc.w   r14
    dec.w   r11
    jnz     7b
8:  inc.w   r14                         ; ... + 1, >> 1
    adc.w   r13
    clrc
    rrc.w   r13
    rrc.w   r14
9:  mov.w   r14, r12
    tst.w   r10
    jz      10f
    inv.w   r12                         ; negative product: -q
    inv.w   r13
    inc.w   r12
    adc.w   r13
10: pop.w   r9
    pop.w   r10
    ret
    .size   fm_mul_by_qm, .-fm_mul_by_qm        ; the requantization section but fm_requant_s8 (code bytes)

; SOFTMAX's per-class passes over one row (kernels/softmax.c has the C definitions and the table).
; fm_softmax_params on the MSP430: exp_hi at 20, small at 24, n_exp at 26, n_small at 28 (checked
; in softmax.c). A difference k = max - x (0 .. 255) is formed in one register as
; (~x + max + 1) & 0xFF.
;
; int8_t fm_softmax_sum_hwmult(const int8_t *x, uint16_t n, const fm_softmax_params *p, uint32_t *sum)
;   x in R12, n (>= 1) in R13, p in R14, sum in R15: returns the row's max; *sum = 16 * (sum of
;   exp_hi[k], k < n_exp) + (sum of small[k], k < n_small), the Q12.19 sum of the exp terms.
    .section .text.fm_softmax_hwmult,"ax",@progbits
    .global fm_softmax_sum_hwmult
    .type   fm_softmax_sum_hwmult, @function
fm_softmax_sum_hwmult:
    push.w  r15                         ; sum
    push.w  r4
    push.w  r5
    push.w  r6
    push.w  r7
    push.w  r8
    push.w  r9
    push.w  r10
    mov.w   r12, r11                    ; the max
    mov.w   r13, r10
    mov.w   #-128, r9
1:  cmp.b   @r11+, r9                   ; signed bytes: x <= the max so far
    jge     2f
    mov.b   -1(r11), r9                 ; new max
2:  dec.w   r10
    jnz     1b
    sxt     r9
    push.w  r9                          ; the max, returned
    mov.b   r9, r7
    inc.w   r7                          ; max + 1 (its low byte is what counts)
    mov.w   20(r14), r4                 ; exp_hi
    mov.w   26(r14), r6                 ; n_exp
    mov.w   28(r14), r5                 ; n_small
    mov.w   24(r14), r14                ; small
    clr.w   r10                         ; sum of exp_hi: r11:r10
    clr.w   r11
    clr.w   r15                         ; sum of small: r15 (a carry adds 2^16 / 16 to r11:r10)
3:  mov.b   @r12+, r8
    inv.b   r8
    add.b   r7, r8                      ; k
    cmp.w   r5, r8
    jhs     5f                          ; k >= n_small: nothing
    mov.w   r14, r9
    add.w   r8, r9
    mov.b   @r9, r9
    add.w   r9, r15
    jnc     4f
    add.w   #0x1000, r10
    adc.w   r11
4:  cmp.w   r6, r8
    jhs     5f                          ; k >= n_exp: no exp_hi
    rla.w   r8
    add.w   r4, r8
    add.w   @r8, r10
    adc.w   r11
5:  dec.w   r13
    jnz     3b
    rla.w   r10                         ; 16 * r11:r10 + r15
    rlc.w   r11
    rla.w   r10
    rlc.w   r11
    rla.w   r10
    rlc.w   r11
    rla.w   r10
    rlc.w   r11
    add.w   r15, r10
    adc.w   r11
    mov.w   r10, r14
    mov.w   r11, r13
    pop.w   r12                         ; the max
    pop.w   r10
    pop.w   r9
    pop.w   r8
    pop.w   r7
    pop.w   r6
    pop.w   r5
    pop.w   r4
    pop.w   r15
    mov.w   r14, 0(r15)
    mov.w   r13, 2(r15)
    ret
    .size   fm_softmax_sum_hwmult, .-fm_softmax_sum_hwmult

; void fm_softmax_out_hwmult(const int8_t *x, int8_t *o, uint16_t n, const fm_softmax_params *p,
;                            int32_t recip, uint16_t exponent, uint16_t a, int16_t max)
;   x in R12, o in R13, n (>= 1) in R14, p in R15; recip, exponent (23 .. 31), a = recip >>
;   (exponent - 8) and the row's max on the stack. Per class: -128 for k >= n_exp; else the
;   estimate y = RESHI(a * exp_hi[k]) + 0x40 (units of 2^-7 of the result): 127 if y >= 2^15,
;   y >> 7 - 128 unless y's low 7 bits are 0x7E or 0x7F, where fm_srdhm / fm_rdbpot decide.
    .global fm_softmax_out_hwmult
    .type   fm_softmax_out_hwmult, @function
fm_softmax_out_hwmult:
    push.w  r4
    push.w  r5
    push.w  r6
    push.w  r7
    push.w  r8
    push.w  r9
    push.w  r10
    ; the arguments on the stack now start at 16(r1): recip 16/18, exponent 20, a 22, max 24
    mov.w   r12, r4                     ; x
    mov.w   r13, r5                     ; o
    mov.w   r14, r6                     ; n
    mov.w   20(r15), r7                 ; exp_hi
    mov.w   26(r15), r8                 ; n_exp
    mov.b   24(r1), r9
    inc.w   r9                          ; max + 1
    mov.w   22(r1), r10                 ; a
    mov.w   r10, &MPY                   ; operand 1 for the whole row (unsigned)
1:  mov.b   @r4+, r12
    inv.b   r12
    add.b   r9, r12                     ; k
    cmp.w   r8, r12
    jhs     6f
    rla.w   r12
    add.w   r7, r12                     ; &exp_hi[k]
    mov.w   @r12, &OP2
    mov.w   &RESHI, r13
    add.w   #0x40, r13
    jn      7f                          ; >= 2^15: 256 or more, 127
    rla.w   r13
    cmp.b   #0xFC, r13                  ; low 7 bits of y 0x7E, 0x7F: too close to call
    jhs     8f
    swpb    r13
    xor.b   #0x80, r13                  ; y >> 7 - 128
    mov.b   r13, 0(r5)
2:  inc.w   r5
    dec.w   r6
    jnz     1b
10: pop.w   r10
    pop.w   r9
    pop.w   r8
    pop.w   r7
    pop.w   r6
    pop.w   r5
    pop.w   r4
    ret
6:  mov.b   #0x80, 0(r5)                ; -128 (the loop's tail repeated: no jump back)
    inc.w   r5
    dec.w   r6
    jnz     1b
    jmp     10b
7:  mov.b   #0x7F, 0(r5)                ; 127
    jmp     2b
8:  mov.w   r8, r14                     ; exact: e = exp_hi[k] << 16 | exp_lo[k]
    rla.w   r14
    add.w   r12, r14
    mov.w   @r14, r14                   ; exp_lo[k] (exp_lo = exp_hi + n_exp)
    mov.w   @r12, r15
    mov.w   16(r1), r12                 ; recip
    mov.w   18(r1), r13
    call    #fm_srdhm
    mov.w   20(r1), r14                 ; exponent
    clr.w   r15
    call    #fm_rdbpot                  ; 0 .. 256
    tst.w   r13
    jnz     9f
    cmp.w   #256, r12
    jhs     9f
    xor.b   #0x80, r12
    mov.b   r12, 0(r5)
    mov.w   r10, &MPY                   ; operand 1 again
    jmp     2b
9:  mov.b   #0x7F, 0(r5)
    mov.w   r10, &MPY
    jmp     2b
    .size   fm_softmax_out_hwmult, .-fm_softmax_out_hwmult

#endif
