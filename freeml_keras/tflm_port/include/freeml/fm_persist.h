/* Warm restart: a prepared image that survives power failures.
 *
 * fm_init parses and prepares a model (operator tables, requantization parameters, the arena
 * plan): far too much work to repeat at every power-on of a batteryless device. fm_power_on
 * keeps the prepared interpreters (model, exit head) in NVM with a seal written last, and at
 * the next power-on uses them again after a check of a few hundred cycles, or prepares afresh
 * when they do not belong to what is running now:
 *   - another model (its model id, from the freeml_prepare metadata, or for a model without one
 *     a fingerprint of 16 sampled words; its address and length),
 *   - another firmware build or runtime version (FM_PERSIST_VERSION, the sizes of the
 *     structures, the address of the kernel table), other memory blocks or step configuration,
 *   - an image whose preparation a power failure interrupted (the seal is invalidated before a
 *     preparation starts and its tag written last: torn or missing tag, no image),
 *   - with `verify` (optional: a Fletcher-32 sum, modulo 65535, over the image and its state
 *     blocks, computed when a preparation seals with `verify` and checked at power-ons with
 *     `verify`; about 7 instructions per 16-bit word), an image whose bytes changed after it was
 *     sealed. Without `verify` nothing reads the image's bytes at power-on: a bit flipped inside
 *     a sealed image after it was sealed is not detected (tests/test_hostile_nvm.py uses
 *     `verify` for those cases).
 * The image, the state blocks and the arena must lie in NVM (the arena for the checkpoints);
 * the head's arena may be volatile (the exit head uses it only inside one step).
 * A build with FM_PREPARE_ON_DEVICE 0 (fm_internal.h) never prepares: it runs from an image
 * sealed by a preparing build, or fails with FM_ERR_UNSUPPORTED.
 */
#ifndef FREEML_FM_PERSIST_H
#define FREEML_FM_PERSIST_H

#include <stdint.h>

#include "freeml/fm.h"
#include "freeml/fm_checkpoint.h"
#include "freeml/fm_exit.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FM_PERSIST_VERSION 2ul
#define FM_SEAL_TAG 0x5EA1ED01ul    /* every byte nonzero: a torn tag never reads as valid */

/* Where the model is and the blocks preparation writes. */
typedef struct {
    const uint8_t *model;
    uint32_t model_len;
    uint8_t *state;             /* NVM */
    uint32_t state_len;
    uint8_t *arena;             /* NVM */
    uint32_t arena_len;
    uint8_t *head_state;        /* NVM; NULL: run without the exit head */
    uint32_t head_state_len;
    uint8_t *head_arena;        /* may be volatile */
    uint32_t head_arena_len;
} fm_blocks;

/* How inference is cut into atomic steps (fm_intermittent's fields of the same names). */
typedef struct {
    uint32_t granularity;
    uint32_t step_work;
    uint32_t step_cost;
} fm_step_config;

/* What an image was prepared for; compared field by field at power-on. */
typedef struct {
    uint32_t build;             /* FM_PERSIST_VERSION, structure sizes, build switches */
    uint32_t model_len;
    uint32_t model_id;          /* freeml_prepare model id, or the fingerprint */
    uint32_t model_id_pos;      /* position of the id in the model; 0: fingerprint */
    uint32_t lens[4];           /* state, arena, head state, head arena */
    uint32_t granularity, step_work, step_cost;
    uint32_t sum;               /* Fletcher sum of the image and its state blocks; 0: none */
    uintptr_t kernels;          /* address of the kernel table: another firmware moves it */
    uintptr_t model;
    uintptr_t blocks[4];
    uint32_t tag;               /* FM_SEAL_TAG, written last */
} fm_seal;

typedef struct {
    fm_interp main;
    fm_interp head;
    fm_exit_head exits;         /* (unused in a build with FM_EXITS 0) */
    uint8_t has_exits;
    fm_seal seal;               /* last: written after everything above */
} fm_prepared;

/* Power-on: reuse the image `p` (inside nvm's region) when its seal matches, else prepare it
 * (fm_init, the exit head when the model has one and b->head_state is given, the per-operator
 * step plan) and seal it. Fills `r` for fm_resume (interpreters, exit head, nvm at
 * ckpt_offset, the step configuration); the caller then sets what it wants of the rest
 * (energy reading, thresholds). *warm = 1 when the image was reused. `verify` also checks the
 * image's sum (see above). On an error the image is left invalid. */
fm_status fm_power_on(fm_prepared *p, fm_nvm *nvm, const fm_blocks *b, const fm_step_config *cfg,
                      uint32_t ckpt_offset, uint8_t verify, fm_intermittent *r, uint8_t *warm);

/* The model id (freeml_prepare) or fingerprint fm_power_on identifies a model by. */
uint32_t fm_model_fingerprint(const uint8_t *model, uint32_t model_len);

#ifdef __cplusplus
}
#endif
#endif
