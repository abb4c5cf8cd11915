/* Intermittent execution: progress that survives power failures.
 *
 * The platform gives a region of non-volatile memory (fm_nvm: FRAM on the MSP430, a retained
 * RAM region on the Cortex-M4F harness, a memory-mapped file on the host). It holds the
 * activation arena and the checkpoint: two slots of a record (C = number of classes, 0 without
 * an exit head)
 *
 *   offset 0  u16 sequence number s       offset 8       u32 unit inside the operator
 *   offset 2  u16 sum of the body         offset 12      i32 accumulator[C] (exit head)
 *   offset 4  u16 operator index          offset 12+4C   u32 tag = ~(the word at offset 0)
 *   offset 6  u16 flags (running, done)
 *
 * A record is valid when its tag is the complement of its first word (complete) and its body
 * (offsets 4 to 12+4C) still has the sum that word carries (intact: a bit flip in NVM after the
 * commit is never taken for progress; the other slot's record is used, or none). A commit writes the slot that does not hold the latest
 * valid record, in three ordered writes: s, then the rest, then the tag (one write when the
 * platform's writes store bytes in address order, fm_nvm.in_order); so a failure at any
 * instruction, in the middle of a commit included, leaves the latest valid record intact or the
 * new one complete (the argument is in checkpoint.c, at fm_ckpt_commit).
 *
 * Between two commits the runtime runs one atomic step: units of one operator, at most
 * `granularity` of them (units mode, step_work = 0) or as many as fit `step_work`
 * MAC-equivalents (work mode, the default), at least one. Units never read what they write and
 * a step never crosses into a second operator with units, so re-running a partly done step
 * after a failure writes the same bytes. Alias operators (RESHAPE) never take a step of their
 * own (they are passed with the step before or after them), except to accumulate an exit point.
 *
 * A build with FM_EXITS 0 (fm_internal.h; freeml_keras.targets derives it for a model without
 * exit points) has no anytime exit: checkpoint.c calls nothing in exit_head.c, records have no
 * accumulator, and what would need the exit head is refused with FM_ERR_UNSUPPORTED, never run
 * without it: exits set in fm_prepare_input, fm_start, fm_resume, fm_answer, fm_exit_now (and
 * fm_plan_steps plans nothing), num_classes > 0 in fm_ckpt_load and fm_ckpt_commit.
 */
#ifndef FREEML_FM_CHECKPOINT_H
#define FREEML_FM_CHECKPOINT_H

#include <stdint.h>

#include "freeml/fm.h"
#include "freeml/fm_exit.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FM_CKPT_HEADER_BYTES 16u     /* bytes of a record besides the accumulator */
#define FM_CKPT_ACC_OFFSET 12u
/* Units per atomic step in units mode (the harness's -g default before work mode existed). */
#define FM_DEFAULT_GRANULARITY 8u
/* No limit on the units of one operator in a step (work mode's default granularity). */
#define FM_GRANULARITY_ANY 0xFFFFFFFFu
/* Work per atomic step by default, in MAC-equivalents (see fm_intermittent.step_work). Chosen
 * by measurement (QEMU / mspdebug, programs/ckpt_run.c, the kernels of 25 Nov 2026), overhead
 * over the continuous run:
 *   step work                     256     512    1024    4096
 *   cnn_s w0.25, Cortex-M4       4.0%    2.9%    2.3%    1.4%
 *   MLP 64-16-10, MSP430         9.1%    5.1%    2.3%    2.3%
 *   MLP 64-16-10, Cortex-M4     16.0%    9.4%    6.0%    6.0%   (one step per operator)
 * and energy: the MLP's 1024-MAC FULLY_CONNECTED is 51 k MSP430 cycles (18 uJ at 0.35 nJ per
 * cycle), inside one charge of a 10 uF capacitor between 3.3 V and 1.8 V (38 uJ); 4096 MACs
 * would not be. A single unit larger than the budget (a CONV_2D output row, a SOFTMAX row: the
 * MLP's is 117 k cycles though it counts 10) is a step of its own: fm_plan_steps reports the
 * largest. */
#define FM_DEFAULT_STEP_WORK 1024u
/* Cost per atomic step by default in cost mode, in the metadata cost table's unit: 50,000 MSP430
 * cycles are 17.5 uJ at 0.35 nJ per cycle (a step and its commit fit one charge of a 10 uF
 * capacitor between 3.3 V and 1.8 V, 38 uJ); about as much work as FM_DEFAULT_STEP_WORK on the
 * MSP430's MAC-heavy operators, and it also bounds the steps whose units are expensive but
 * count few MACs (a SOFTMAX row: 10 MAC-equivalents, 115 k cycles, is a step of its own). */
#define FM_DEFAULT_STEP_COST 50000u
#define FM_CKPT_MAX_CLASSES 64u
#define FM_CKPT_RUNNING 0x0001u
#define FM_CKPT_DONE 0x0002u
#define FM_CKPT_EARLY 0x0004u       /* done at an exit point, not at the end of the model */
/* flags bits 8..15: number of exit points passed (their contributions are in the accumulator) */
#define FM_CKPT_PASSED(flags) ((uint16_t)((flags) >> 8))

/* Non-volatile memory: `mem` is the region as memory; `write` stores n bytes at offset and
 * returns when they are durable (a platform may count or slow writes; it must not reorder a
 * later write before an earlier one). `in_order` = 1 declares more: one write stores its bytes
 * in increasing address order, so a failure inside it leaves a prefix stored (a forward byte or
 * word loop such as the memcpy of the three platforms here, on memory whose stores complete or
 * do not happen, like FRAM); a commit is then one write instead of three. 0 (the safe default)
 * assumes nothing about the order inside one write. */
typedef struct fm_nvm {
    uint8_t *mem;
    uint32_t len;
    void (*write)(struct fm_nvm *nvm, uint32_t offset, const uint8_t *src, uint32_t n);
    void *ctx;
    uint8_t in_order;
} fm_nvm;

typedef struct {
    uint32_t seq;
    uint16_t op;
    uint16_t flags;
    uint32_t unit;
    uint16_t num_classes;
    int32_t acc[FM_CKPT_MAX_CLASSES];
} fm_ckpt;

/* Bytes of the two checkpoint slots for a head with num_classes classes. */
uint32_t fm_ckpt_bytes(uint16_t num_classes);

/* The latest valid record at `offset` (found = 0 when neither slot holds one: *out is zeroed). */
fm_status fm_ckpt_load(const fm_nvm *nvm, uint32_t offset, uint16_t num_classes, fm_ckpt *out,
                       uint8_t *found);

/* Write *st as the next record (st->seq is advanced) into the slot not holding the latest. */
fm_status fm_ckpt_commit(fm_nvm *nvm, uint32_t offset, fm_ckpt *st);


/* An interpreter whose arena lies in NVM, and its checkpoint. */
typedef struct {
    fm_interp *it;
    fm_nvm *nvm;
    uint32_t ckpt_offset;       /* where the two slots are in the NVM region */
    uint32_t granularity;       /* at most this many units of one operator per step (>= 1) */
    uint32_t step_work;         /* 0: units mode; else the most work per step in MAC-equivalents:
                                 * MACs (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED), window
                                 * reads (pooling), output bytes (the rest); a step always runs
                                 * at least one unit */
    fm_ckpt st;
    uint8_t st_committed;       /* st equals the latest record in NVM (0 after power-on: read it) */
    uint32_t units_run;         /* units executed by this process (re-executed ones included) */
    uint32_t commits;
    /* Anytime exit (all optional: exits == NULL runs the model to its end). */
    const fm_exit_head *exits;
    fm_interp *head;            /* interpreter of the exit-head subgraph */
    /* Energy rule, in integers of the platform's energy unit (the host harness: pJ): */
    uint32_t (*energy)(void *ctx); /* the platform's energy reading; NULL: no energy rule */
    void *energy_ctx;
    uint32_t energy_per_mac;    /* energy units per MAC, to price the work to the next exit */
    uint32_t energy_per_cycle;  /* energy units per unit of the metadata's cost table (cycles):
                                 * used instead of energy_per_mac when > 0 and the model's v2
                                 * metadata has a complete cost table (fm_exit_head.has_costs) */
    int16_t stop_at_exit;       /* stop at this exit point whatever the policy says; -1: none */
    uint8_t use_thresholds;     /* stop when confidence reaches the metadata's threshold */
    uint32_t step_cost;         /* cost mode (used when > 0 and the model's v2 metadata has a
                                 * complete per-operator cost table): the most cost per step in
                                 * the table's unit (cycles of the device it was converted for);
                                 * else work mode (step_work), else units mode */
    uint8_t planned;            /* the operators' step_units hold this configuration's plan */
} fm_intermittent;

/* The answer of a finished inference: exit index (num_exits for the model's own output) and
 * the int8 logits of that exit (the caller reads the model output tensor for the full model). */
fm_status fm_answer(const fm_intermittent *r, int16_t *exit_index, int8_t *logits);

/* Stop now with the answer of the last exit point passed (committed as done). FM_ERR_STATE when
 * no exit point has been passed yet. */
fm_status fm_exit_now(fm_intermittent *r, int16_t *exit_index, int8_t *logits);

/* Before writing a new input into the arena: commit an idle record, so that a failure while the
 * input is written leaves nothing to resume (instead of the previous inference's state). */
fm_status fm_prepare_input(fm_intermittent *r);

/* Begin a new inference: the input must already be in the arena. Commits (op 0, unit 0). */
fm_status fm_start(fm_intermittent *r);

/* Continue the committed inference (after fm_start or after a reset) for at most max_steps
 * atomic steps (0: until done); *done = 1 when it has finished and "done" is committed.
 * Returns FM_ERR_STATE when there is no inference to resume. */
fm_status fm_resume(fm_intermittent *r, uint32_t max_steps, uint8_t *done);

/* Units of the largest atomic step of the model at this granularity in units mode (the most
 * units between two commits), and the operator where it occurs. */
uint32_t fm_largest_step_units(const fm_interp *it, uint32_t granularity, uint16_t *op);

/* One atomic step: `units` units of operator `op` from `unit` (0 units: a step that only passes
 * alias operators, one of them an exit point); its work in MAC-equivalents. */
typedef struct {
    uint16_t op;
    uint32_t unit;
    uint32_t units;
    uint32_t work;
    uint32_t cost;              /* by the metadata's cost table (0 when it has none) */
} fm_step_info;

/* Plan the atomic steps of r's configuration: each operator's step_units (and unit_cost from
 * the metadata's cost table), in r->it's operator table; sets r->planned. fm_resume and
 * fm_plan_steps call it when r->planned is 0; fm_power_on plans once and keeps the plan in the
 * prepared image. */
fm_status fm_plan_ops(fm_intermittent *r);

/* The atomic steps of one inference with r's configuration (r->it, granularity, step_work,
 * step_cost, exits), the first max_steps of them into `steps` (may be NULL), and the largest
 * into *largest: by cost in cost mode, else by work (most units in units mode). Returns the number of steps (0 for
 * granularity 0, or exits set in a build with FM_EXITS 0). */
uint32_t fm_plan_steps(const fm_intermittent *r, fm_step_info *steps, uint32_t max_steps,
                       fm_step_info *largest);

#ifdef __cplusplus
}
#endif
#endif
