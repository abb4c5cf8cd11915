/* The few services a test or benchmark program needs from a bare-metal target: text output,
 * exit with a status, and a marker that the emulator-side counters watch.
 *
 * Implemented once per target (cortex_m4/target.c: semihosting; msp430/target.c: mspdebug's
 * simulated console). Programs that use only this header run unchanged on both targets. */
#ifndef FREEML_FM_TARGET_H
#define FREEML_FM_TARGET_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One character of output. */
void fm_target_putc(char c);
/* A NUL-terminated string. */
void fm_target_puts(const char *s);
/* A signed decimal number. */
void fm_target_put_i32(int32_t v);
/* End the program with `code` (0 = success); never returns. */
void fm_target_exit(int code);

/* Marker: the emulator records its instruction (QEMU plugin) or cycle (mspdebug tracer) counter
 * every time this function is entered. Counts between two markers are what ran in between
 * (plus the marker's own few instructions). Never inlined. */
void fm_target_mark(void);

#ifdef __cplusplus
}
#endif
#endif
