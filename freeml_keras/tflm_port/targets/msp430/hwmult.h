/* The MSP430 hardware multiplier's 16x16 register interface (identical in the MPY of the
 * F1xx/F2xx parts and the MPY32 of the FR5994, whose base is 0x04C0).
 * mspdebug 0.22's simulated multiplier (`simio add hwmult`) sits at the fixed address 0x0130 and
 * models only these registers, so the simulator build passes -DFM_MSP430_MPY_BASE=0x0130.
 * Not interrupt-safe: callers must not use the multiplier from interrupt handlers (the project's
 * programs run with interrupts disabled). */
#ifndef FREEML_MSP430_HWMULT_H
#define FREEML_MSP430_HWMULT_H

#include <stdint.h>

#ifndef FM_MSP430_MPY_BASE
#define FM_MSP430_MPY_BASE 0x04C0u
#endif

#define FM_MPY_REG(off) (*(volatile uint16_t *)(uintptr_t)(FM_MSP430_MPY_BASE + (off)))
#define FM_MPY FM_MPY_REG(0x0u)     /* unsigned multiply, operand 1 */
#define FM_MPYS FM_MPY_REG(0x2u)    /* signed multiply, operand 1 */
#define FM_MAC FM_MPY_REG(0x4u)     /* unsigned multiply-accumulate, operand 1 */
#define FM_MACS FM_MPY_REG(0x6u)    /* signed multiply-accumulate, operand 1 */
#define FM_OP2 FM_MPY_REG(0x8u)     /* operand 2: writing it starts the operation */
#define FM_RESLO FM_MPY_REG(0xAu)   /* result / accumulator, low word */
#define FM_RESHI FM_MPY_REG(0xCu)   /* result / accumulator, high word */

#endif
