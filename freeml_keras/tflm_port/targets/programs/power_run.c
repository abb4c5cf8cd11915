/* Power-on to progress: what a batteryless device runs at every power-on, under power failures.
 *
 * main() is the whole life of one power-on: fm_power_on (a warm restart from the prepared image
 * sealed in NVM, or a cold preparation), then the committed inference is resumed (a new one is
 * started from model_input when there is none), and its answer printed. The prepared image, the
 * state blocks, the arena and the checkpoint slots lie in section .persistent (FRAM on the
 * MSP430, the retained region on the Cortex-M4 harness); nothing else survives a power failure.
 *
 * Generated headers (freeml_keras.targets.runs): model_data.h, model_io.h (model_input[],
 * FM_STATE_BYTES, FM_ARENA_BYTES, FM_HEAD_STATE_BYTES, FM_HEAD_ARENA_BYTES) and power_cfg.h
 * (FM_STEP_COST, FM_STEP_WORK; FM_TRACE_FIRST_UNIT, which the build defines as power_first_unit()).
 *
 * With FM_PREPARE_ONLY (the provisioning build, freeml_keras.targets.power.provision) main stops
 * after fm_power_on with "@sizes" (no inference; the kernels' eval code is left out).
 *
 * With FM_INFERENCES n (power_cfg.h), n inferences one after the other (the same input), as a
 * device that answers and takes the next input. Output, when an inference has finished: "@boots <power-ons> <warm ones>", "@sizes <state
 * used> <arena needed> <head state used> <head arena needed>", "@done <exit> <int8 outputs>" (nothing is printed on
 * the way: output would cost the restart cycles); "@need <state> <arena> <head state> <head arena>"
 * when a block is too small, "@error <where> <status>" on a runtime error. Marks, per power-on:
 * main's entry, after fm_power_on, the first unit of work fm_resume runs. Stops for the measuring
 * driver: power_event (commits, exit points) and power_answered (an answer is ready).
 *
 * `phase` (in NVM, its address found by symbol) says where the program is, for the driver that
 * cuts the power: 1 restart, 2 inference work, 3 a commit, 4 done, 5 writing a new input.
 *
 * With FM_COUNTDOWN_FAILURES (the Cortex-M4, whose emulator cannot be stopped and reset from
 * outside here), the power is cut inside the program instead: the NVM write path counts the
 * bytes it stores and at the k-th byte of a seeded countdown (power_countdown[]) the "power
 * fails": the program goes back to its start (longjmp: registers and stack are gone), clobbers
 * its volatile memory and powers on again. */
#include <stdint.h>
#include <string.h>

#include "fm_target.h"
#include "freeml/fm.h"
#include "freeml/fm_checkpoint.h"
#include "freeml/fm_persist.h"
#include "model_data.h"
#include "model_io.h"
#include "power_cfg.h"

#ifdef FM_COUNTDOWN_FAILURES
#include <setjmp.h>
#endif

#define PW_ALIGN16(n) (((n) + 15u) & ~15u)
/* the model's classes in the exit head's accumulator (model_io.h; 0 without an exit head) */
#ifndef FM_CKPT_CLASSES
#define FM_CKPT_CLASSES FM_CKPT_MAX_CLASSES
#endif
#define PW_SLOTS PW_ALIGN16(FM_CKPT_HEADER_BYTES * 2u + 8u * FM_CKPT_CLASSES)

enum { PH_RESTART = 1, PH_WORK = 2, PH_COMMIT = 3, PH_DONE = 4, PH_INPUT = 5 };

/* Everything that survives a power failure, but the arena (below). */
typedef struct {
    uint8_t slots[PW_SLOTS];
    uint8_t state[PW_ALIGN16(FM_STATE_BYTES)];
#if FM_HEAD_STATE_BYTES
    uint8_t head_state[PW_ALIGN16(FM_HEAD_STATE_BYTES)];
#endif
    fm_prepared image;
} power_nvm;

static power_nvm nvm_mem __attribute__((section(".persistent"), aligned(16)));
/* The arena, in NVM too. On the MSP430 it lies right after the model's data (section
 * .fram_arena, which the linker script places after .fram): the preparing build
 * (FM_PREPARE_ONLY) never touches the arena, so at those addresses it holds the rest of the
 * model file, the tables it parses, and the device's map need not hold both. That build checks
 * that its preparation left those bytes as they were (arena_sum). model_data.h's
 * FM_MODEL_DATA_BYTES: the bytes of the file a build without preparation keeps. */
#define PW_ARENA_BYTES PW_ALIGN16(FM_ARENA_BYTES)
#ifdef FM_PREPARE_ONLY
#define PW_ARENA ((uint8_t *)fm_model + PW_ALIGN16(FM_MODEL_DATA_BYTES))
#else
#ifdef __MSP430__
#define PW_ARENA_SECTION ".fram_arena"
#else
#define PW_ARENA_SECTION ".persistent"
#endif
static uint8_t pw_arena[PW_ARENA_BYTES] __attribute__((section(PW_ARENA_SECTION), aligned(16)));
#define PW_ARENA pw_arena
#endif
volatile uint16_t power_phase __attribute__((section(".persistent")));
volatile uint16_t power_ons __attribute__((section(".persistent")));
volatile uint16_t warm_ons __attribute__((section(".persistent")));
/* inferences completed: the program runs FM_INFERENCES of them (power_cfg.h; default 1) */
volatile uint16_t inferences __attribute__((section(".persistent")));
#ifndef FM_INFERENCES
#define FM_INFERENCES 1u
#endif
#if FM_HEAD_STATE_BYTES
/* the exit head's arena: volatile memory (used only inside one step), not cleared at start-up;
 * first in SRAM (section .noinit.head, which the MSP430 linker script puts at the start of
 * .noinit). The preparing build never uses it: there it is only that address, and the SRAM it
 * would take holds part of that build's code (freeml_keras.targets.spill). */
#define PW_HEAD_ARENA_BYTES PW_ALIGN16(FM_HEAD_ARENA_BYTES)
#ifdef FM_PREPARE_ONLY
extern uint8_t __noinit_start[];
#define PW_HEAD_ARENA __noinit_start
#else
static uint8_t head_arena[PW_HEAD_ARENA_BYTES] __attribute__((section(".noinit.head"), aligned(16)));
#define PW_HEAD_ARENA head_arena
#endif
#endif
/* Set up at every power-on (fm_power_on fills r): volatile, and not cleared by the start-up code,
 * which would cost the restart about 1,000 MSP430 cycles for nothing. */
static fm_nvm nvm __attribute__((section(".noinit")));
static fm_intermittent r __attribute__((section(".noinit")));

#ifdef FM_COUNTDOWN_FAILURES
static const uint32_t power_countdown[] = FM_COUNTDOWN_FAILURES;
volatile uint16_t power_failures __attribute__((section(".persistent")));
volatile uint16_t power_failed_in[6] __attribute__((section(".persistent")));
static uint32_t bytes_left;
static jmp_buf power_lost;
#endif

void power_first_unit(void);
void power_first_unit(void)
{
    power_phase = PH_WORK;
    fm_target_mark();
}

/* FM_TRACE_EVENT (fm_internal.h): commits and exit points, where the measuring driver stops
 * (freeml_keras.targets.power.measure_provisioned reads `code` from r12). */
void power_event(uint16_t code);
__attribute__((noinline)) void power_event(uint16_t code)
{
    __asm__ volatile("" : : "r"(code) : "memory");
}

/* An answer is ready (before it is printed): the end of an inference for the measuring driver. */
void power_answered(void);
__attribute__((noinline)) void power_answered(void)
{
    __asm__ volatile("" ::: "memory");
}

/* Store len bytes at dst in NVM, as a power failure may cut it (the checkpoints' writes and the
 * input's). */
static void nvm_store(uint8_t *dst, const uint8_t *src, uint32_t len)
{
    const uint16_t was = power_phase;
    if (was == PH_WORK) power_phase = PH_COMMIT;
#ifdef FM_COUNTDOWN_FAILURES
    while (len > 0u) {
        if (bytes_left == 1u) {             /* the power fails at this byte: it is not stored */
            power_failed_in[power_phase < 6u ? power_phase : 0u]++;
            longjmp(power_lost, 1);
        }
        if (bytes_left > 1u) bytes_left--;
        *dst++ = *src++;
        len--;
    }
#else
    memcpy(dst, src, len);                  /* forward copy: writes land in address order */
#endif
    power_phase = was;
}

#ifdef FM_PREPARE_ONLY
/* FNV-1a of the arena's bytes (in the preparing build: the model file's tail and what follows) */
static uint32_t arena_sum(void)
{
    uint32_t h = 2166136261u, i;
    for (i = 0; i < PW_ARENA_BYTES; i++) h = (h ^ PW_ARENA[i]) * 16777619u;
    return h;
}
#endif

static void nvm_write(fm_nvm *n, uint32_t offset, const uint8_t *src, uint32_t len)
{
    nvm_store(n->mem + offset, src, len);
}

static void put_field(int32_t v)
{
    fm_target_putc(' ');
    fm_target_put_i32(v);
}

/* "@sizes <state used> <arena needed> <head state used> <head arena needed>": what the blocks
 * must hold on this target */
static void put_sizes(void)
{
    fm_target_puts("@sizes");
    put_field((int32_t)nvm_mem.image.main.state_used);
    put_field((int32_t)nvm_mem.image.main.arena_needed);
    put_field((int32_t)(nvm_mem.image.has_exits ? nvm_mem.image.head.state_used : 0u));
    put_field((int32_t)(nvm_mem.image.has_exits ? nvm_mem.image.head.arena_needed : 0u));
}

/* What power-on prepares, and how inference is cut into steps: constants in the image (filling
 * them at every power-on would cost the restart a few hundred MSP430 cycles). */
static const fm_blocks blocks = {
    fm_model, (uint32_t)FM_MODEL_BYTES,     /* the whole file's length (a provisioned device stores its data only) */
    nvm_mem.state, (uint32_t)sizeof nvm_mem.state,
    PW_ARENA, (uint32_t)PW_ARENA_BYTES,
#if FM_HEAD_STATE_BYTES
    nvm_mem.head_state, (uint32_t)sizeof nvm_mem.head_state,
    PW_HEAD_ARENA, (uint32_t)PW_HEAD_ARENA_BYTES,
#else
    NULL, 0u, NULL, 0u,
#endif
};
static const fm_step_config steps = {FM_GRANULARITY_ANY, FM_STEP_WORK, FM_STEP_COST};

static int power_on_and_run(void)
{
    fm_status s;
    uint8_t warm = 0, done = 0;
    int16_t answer = 0;
    int8_t logits[FM_CKPT_MAX_CLASSES];

    power_phase = PH_RESTART;
    fm_target_mark();
    nvm.mem = (uint8_t *)&nvm_mem;
    nvm.len = (uint32_t)sizeof nvm_mem;
    nvm.write = nvm_write;
    nvm.ctx = NULL;
    nvm.in_order = 1;
#ifdef FM_PREPARE_ONLY
    const uint32_t arena_was = arena_sum();
#endif
    s = fm_power_on(&nvm_mem.image, &nvm, &blocks, &steps, 0u, 0u, &r, &warm);
    fm_target_mark();
    power_ons = (uint16_t)(power_ons + 1u);
    warm_ons = (uint16_t)(warm_ons + warm);
    if (s == FM_ERR_MEMORY) {               /* the blocks' sizes this target needs */
        fm_target_puts("@need");
        put_field((int32_t)nvm_mem.image.main.state_needed);
        put_field((int32_t)nvm_mem.image.main.arena_needed);
        put_field((int32_t)nvm_mem.image.head.state_needed);
        put_field((int32_t)nvm_mem.image.head.arena_needed);
        fm_target_putc('\n');
    }
    if (s) {
        fm_target_puts("@error power_on");
        put_field(s);
        put_field(fm_last_error(&nvm_mem.image.main)->op);
        fm_target_putc('\n');
        return 2;
    }
#ifdef FM_PREPARE_ONLY
    /* the provisioning build (freeml_keras.targets.power.provision): prepare and seal, no inference */
    if (arena_sum() != arena_was) {         /* preparation wrote the arena: the model's tail is gone */
        fm_target_puts("@error arena_written\n");
        return 8;
    }
    put_sizes();
    fm_target_putc('\n');
    (void)done;
    (void)answer;
    (void)logits;
    return 0;
#else
    for (;;) {
        s = fm_resume(&r, 0u, &done);
        if (s == FM_ERR_STATE) {             /* nothing committed to resume: a new inference */
            const int16_t t = fm_input(r.it, 0);
            power_phase = PH_INPUT;
            if (fm_tensor_bytes(r.it, t) != (uint32_t)sizeof model_input || fm_prepare_input(&r) != FM_OK) return 3;
            nvm_store(fm_tensor_data(r.it, t), (const uint8_t *)model_input, (uint32_t)sizeof model_input);
            if (fm_start(&r) != FM_OK) return 4;
            power_phase = PH_RESTART;
            s = fm_resume(&r, 0u, &done);
        }
        if (s || !done) {
            fm_target_puts("@error resume");
            put_field(s);
            fm_target_putc('\n');
            return 5;
        }
        power_phase = PH_DONE;
        if (fm_answer(&r, &answer, logits) != FM_OK) return 6;
        power_answered();
        /* printed only now: output costs cycles that are not the restart's */
        fm_target_puts("@boots");
        put_field(power_ons);
        put_field(warm_ons);
        fm_target_putc('\n');
        put_sizes();
        fm_target_puts("\n@done");
        put_field(answer);
        {
            const int16_t t = fm_output(r.it, 0);
            const int8_t *y = (const int8_t *)fm_tensor_data(r.it, t);
            uint32_t i, n = fm_tensor_bytes(r.it, t);
            if (r.exits && answer < (int16_t)r.exits->num_exits) {
                y = logits;
                n = r.exits->num_classes;
            }
            for (i = 0; i < n; i++) put_field(y[i]);
        }
        fm_target_putc('\n');
        inferences = (uint16_t)(inferences + 1u);
        if (inferences >= FM_INFERENCES) return 0;
        /* the next input (the same one again): what a device does after an answer */
        power_phase = PH_INPUT;
        if (fm_prepare_input(&r) != FM_OK) return 7;
    }
#endif
}

#ifdef FM_COUNTDOWN_FAILURES
/* Each countdown entry is one power failure at that byte of the NVM writes after a power-on;
 * then a last power-on without one runs to the end. */
static volatile uint16_t failure_index __attribute__((section(".persistent")));

int main(void)
{
    int rc;
    failure_index = 0u;
    power_failures = 0u;
    memset((void *)power_failed_in, 0, sizeof power_failed_in);
    power_ons = 0u;
    warm_ons = 0u;
    inferences = 0u;
    memset(&nvm_mem, 0, sizeof nvm_mem);
    if (setjmp(power_lost)) {
        power_failures = (uint16_t)(power_failures + 1u);
        memset(&r, 0xA5, sizeof r);          /* the volatile state is gone */
        memset(&nvm, 0xA5, sizeof nvm);
    }
    bytes_left = failure_index < sizeof power_countdown / sizeof power_countdown[0]
                 ? power_countdown[failure_index] : 0u;
    failure_index = (uint16_t)(failure_index + 1u);
    rc = power_on_and_run();
    fm_target_puts("@failures");
    put_field(power_failures);
    {
        uint8_t k;
        for (k = 0; k < 6u; k++) put_field(power_failed_in[k]);
    }
    fm_target_putc('\n');
    return rc;
}
#else
int main(void)
{
    return power_on_and_run();
}
#endif
