/* Intermittent execution on a target: one inference with checkpoints at several granularities
 * against the plain fm_invoke run, plus a resume after an emulated reset.
 *
 * The arena and the two checkpoint slots live in a non-volatile region (section .persistent:
 * FRAM on the MSP430, the retained RAM region on the M4 harness). Generated headers
 * (freeml_keras.targets.run_checkpointed): model_data.h, model_io.h (model_input[],
 * FM_STATE_BYTES, FM_ARENA_BYTES) and ckpt_cfg.h (FM_GRANULARITIES, FM_NUM_GRANULARITIES,
 * FM_RESUME_AFTER_STEPS). Output lines, one mark pair per line in this order:
 *     @plain <int8 outputs>                                   fm_invoke
 *     @ckpt <granularity> <units run> <commits> <NVM bytes written by commits> <outputs>
 *                                 units mode: at most <granularity> units of one operator a step
 *     @resume <steps before the reset> <units run after it> <outputs>   (whole, both halves)
 *     @work <step work> <units run> <commits> <NVM bytes> <largest step work> <steps> <outputs>
 *                                 work mode, one line per FM_STEP_WORKS entry (ckpt_cfg.h may
 *                                 define FM_STEP_WORKS and FM_NUM_STEP_WORKS; by default the
 *                                 runtime's default configuration, FM_DEFAULT_STEP_WORK)
 *     @noexits <fm_start status> <fm_resume status>   only a build without exit support
 *                                 (FM_EXITS 0, fm_kernel_config.h): both with exits set, which
 *                                 that build must refuse (FM_ERR_UNSUPPORTED) */
#include <stdint.h>
#include <string.h>

#include "ckpt_cfg.h"
#include "fm_target.h"
#include "freeml/fm.h"
#include "freeml/fm_checkpoint.h"
#include "freeml/fm_internal.h"    /* FM_EXITS */
#include "model_data.h"
#include "model_io.h"

#ifndef FM_STEP_WORKS
#define FM_NUM_STEP_WORKS 1
#define FM_STEP_WORKS {FM_DEFAULT_STEP_WORK}
#endif

#define FM_ALIGN16(n) (((n) + 15u) & ~15u)
/* The two checkpoint slots (records without an accumulator: no exit head here), then the arena. */
#define FM_SLOTS_BYTES FM_ALIGN16(FM_CKPT_HEADER_BYTES * 2u)
#define FM_NVM_BYTES (FM_SLOTS_BYTES + FM_ALIGN16(FM_ARENA_BYTES))

static uint8_t nvm_mem[FM_NVM_BYTES] __attribute__((section(".persistent"), aligned(16)));
static uint8_t state[FM_STATE_BYTES] __attribute__((aligned(16)));
static const uint32_t granularities[FM_NUM_GRANULARITIES] = FM_GRANULARITIES;
static const uint32_t step_works[FM_NUM_STEP_WORKS] = FM_STEP_WORKS;
static fm_interp interp;
static fm_nvm nvm;
static uint32_t nvm_bytes;

static void nvm_write(fm_nvm *n, uint32_t offset, const uint8_t *src, uint32_t len)
{
    memcpy(n->mem + offset, src, len);
    nvm_bytes += len;
}

static void put_field(int32_t v)
{
    fm_target_putc(' ');
    fm_target_put_i32(v);
}

static void put_output(void)
{
    const int16_t t = fm_output(&interp, 0);
    const int8_t *y = (const int8_t *)fm_tensor_data(&interp, t);
    uint32_t i;
    for (i = 0; i < fm_tensor_bytes(&interp, t); i++) put_field(y[i]);
    fm_target_putc('\n');
}

/* "Power-on": a fresh interpreter over the same NVM (the state block is rebuilt by fm_init). */
static int power_on(fm_intermittent *r, uint32_t granularity, uint32_t step_work)
{
    if (fm_init(&interp, fm_model, fm_model_len, state, sizeof state, nvm_mem + FM_SLOTS_BYTES,
                FM_NVM_BYTES - FM_SLOTS_BYTES) != FM_OK)
        return 0;
    nvm.mem = nvm_mem;
    nvm.len = FM_NVM_BYTES;
    nvm.write = nvm_write;
    nvm.ctx = NULL;
    nvm.in_order = 1;   /* nvm_write is memcpy: newlib's and msp430/libc.c's copy forward */
    memset(r, 0, sizeof *r);
    r->it = &interp;
    r->nvm = &nvm;
    r->ckpt_offset = 0;
    r->granularity = granularity;
    r->step_work = step_work;
    r->stop_at_exit = -1;
    return 1;
}

static int new_input(fm_intermittent *r)
{
    const int16_t t = fm_input(&interp, 0);
    if (fm_prepare_input(r) != FM_OK || fm_tensor_bytes(&interp, t) != (uint32_t)sizeof model_input) return 0;
    nvm_write(&nvm, (uint32_t)(fm_tensor_data(&interp, t) - nvm_mem), (const uint8_t *)model_input,
              (uint32_t)sizeof model_input);
    return fm_start(r) == FM_OK;
}

/* One inference from a new input, checkpointed with this configuration, between two marks,
 * and its line: @<key> <granularity or step work> <units run> <commits> <NVM bytes> then, in
 * work mode (step_work > 0), <largest step work> <steps>, then the outputs. 0 on failure. */
static int measured_run(fm_intermittent *r, const char *key, uint32_t granularity, uint32_t step_work)
{
    uint8_t done = 0;
    if (!power_on(r, granularity, step_work) || !new_input(r)) return 0;
    nvm_bytes = 0;
    fm_target_mark();
    if (fm_resume(r, 0, &done) != FM_OK || !done) return 0;
    fm_target_mark();
    fm_target_puts(key);
    put_field((int32_t)(step_work ? step_work : granularity));
    put_field((int32_t)r->units_run);
    put_field((int32_t)r->commits);
    put_field((int32_t)nvm_bytes);
    if (step_work) {
        fm_step_info largest;
        const uint32_t steps = fm_plan_steps(r, NULL, 0, &largest);
        put_field((int32_t)largest.work);
        put_field((int32_t)steps);
    }
    put_output();
    return 1;
}

int main(void)
{
    fm_intermittent r;
    uint8_t done = 0;
    uint16_t g;
    uint32_t units_before;

    if (FM_SLOTS_BYTES < fm_ckpt_bytes(0) || !power_on(&r, 1, 0)) {
        fm_target_puts("@error init\n");
        return 2;
    }
    /* continuous run: the input written directly, fm_invoke */
    memcpy(fm_tensor_data(&interp, fm_input(&interp, 0)), model_input, sizeof model_input);
    fm_target_mark();
    if (fm_invoke(&interp) != FM_OK) return 3;
    fm_target_mark();
    fm_target_puts("@plain");
    put_output();

    for (g = 0; g < FM_NUM_GRANULARITIES; g++) {
        if (!measured_run(&r, "@ckpt", granularities[g], 0)) return 4;
    }

    /* Resume: run some steps, "lose power" (drop every RAM structure), power on, resume. */
    if (!power_on(&r, granularities[0], 0) || !new_input(&r)) return 6;
    done = 0;
    fm_target_mark();
    if (fm_resume(&r, FM_RESUME_AFTER_STEPS, &done) != FM_OK || done) return 7;
    units_before = r.units_run;
    memset(state, 0xA5, sizeof state);                 /* the volatile state is gone */
    memset(&interp, 0xA5, sizeof interp);
    if (!power_on(&r, granularities[0], 0)) return 8;
    if (fm_resume(&r, 0, &done) != FM_OK || !done) return 9;
    fm_target_mark();
    fm_target_puts("@resume");
    put_field((int32_t)units_before);
    put_field((int32_t)r.units_run);
    put_output();

    /* Work mode (after the runs above, so that their marks keep their places). */
    for (g = 0; g < FM_NUM_STEP_WORKS; g++) {
        if (!measured_run(&r, "@work", FM_GRANULARITY_ANY, step_works[g])) return 10;
    }
#if !FM_EXITS
    /* Exits set in a build without exit support: refused, not run as if there were none. The
     * pointer is never read (this build has no code that could). */
    if (!power_on(&r, FM_GRANULARITY_ANY, FM_DEFAULT_STEP_WORK)) return 12;
    r.exits = (const fm_exit_head *)(const void *)&r;
    fm_target_puts("@noexits");
    put_field(fm_start(&r));
    put_field(fm_resume(&r, 0, &done));
    fm_target_putc('\n');
#endif
    return 0;
}
