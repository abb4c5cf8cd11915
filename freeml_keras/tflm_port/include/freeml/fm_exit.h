/* Anytime exit through the shared exit head (gNet), evaluated incrementally.
 *
 * The model's `freeml` metadata (versions 1 and 2, see freeml_keras/metadata.py) names, for each exit
 * point, the main-subgraph tensor and the operator after which it is complete, and the input of
 * the exit-head subgraph it feeds. After exit point i the runtime runs that input's own chain of
 * head operators (requantize, pooling, reshape) and adds W_i . (p_i - zero point) to one int32
 * accumulator per class; the bias is its starting value. Logits at exit k are the accumulator
 * requantized as FULLY_CONNECTED does it: b + sum_{i<=k} W_i . p_i, the order of
 * freeml_keras.exits.incremental_logits_int8, equal to the head run with later exits zeroed.
 *
 * The intermittent runtime (checkpoint.c) calls these in a build with FM_EXITS 1 (the default,
 * fm_internal.h), the application sets them up (fm_exit_find, fm_exit_init); a target build for
 * a model without exit points has FM_EXITS 0 and leaves exit_head.c out.
 */
#ifndef FREEML_FM_EXIT_H
#define FREEML_FM_EXIT_H

#include <stdint.h>

#include "freeml/fm.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FM_MAX_EXITS 8u
#define FM_MD_EXIT_RECORD 16u      /* bytes of an exit record in the freeml metadata */
#define FM_MD_OP_RECORD_V1 16u     /* operator record, version 1: MACs, sparse MACs, weight and */
#define FM_MD_OP_RECORD_V2 20u     /* output bytes; version 2 adds u32 cost (cycles, 0: unknown) */
#define FM_MAX_CHAIN 6u

typedef struct {
    uint16_t num_exits;
    uint16_t num_classes;
    uint16_t head_subgraph;
    int16_t main_tensor[FM_MAX_EXITS];
    int16_t head_input[FM_MAX_EXITS];
    uint16_t after_op[FM_MAX_EXITS];
    uint32_t conf_limit[FM_MAX_EXITS];       /* the metadata's threshold t as the largest exp sum
                                              * that reaches it (fm_exit_conf_limit) */
    uint16_t chain[FM_MAX_EXITS][FM_MAX_CHAIN];
    uint8_t chain_len[FM_MAX_EXITS];
    int16_t pooled[FM_MAX_EXITS];            /* head tensor holding the pooled vector p_i */
    uint32_t slice[FM_MAX_EXITS];            /* its first column in the FC's input */
    uint32_t slice_len[FM_MAX_EXITS];
    uint16_t fc_op;
    uint32_t macs_to_exit[FM_MAX_EXITS];     /* MACs of the main operators up to each exit */
    uint32_t macs_total;
    /* v2 metadata: summed per-operator cost (cycles on the converted-for device; instructions
     * for a Cortex-M4 table measured under QEMU) up to each exit and in all; has_costs = 1 when
     * every operator that runs has a nonzero cost (the table is complete). Saturating sums. */
    uint32_t cost_to_exit[FM_MAX_EXITS];
    uint32_t cost_total;
    uint8_t has_costs;
} fm_exit_head;

/* The subgraph index of the exit head named in the metadata. FM_ERR_UNSUPPORTED: no freeml
 * metadata, an unknown version or no exit points; FM_ERR_FORMAT: its header or record tables do
 * not fit the metadata buffer. */
fm_status fm_exit_find(const uint8_t *model, uint32_t model_len, uint16_t *head_subgraph);

/* Read the metadata (version 1 or 2; its record tables are checked against the buffer's length)
 * and plan each exit's chain in `head` (an interpreter initialized on the head subgraph with
 * fm_init_subgraph). `main` is the interpreter of subgraph 0. */
fm_status fm_exit_init(fm_exit_head *h, const fm_interp *main, const fm_interp *head);

/* Index of the exit point completed by main operator `op`, or -1. */
int16_t fm_exit_at_op(const fm_exit_head *h, uint16_t op);

/* The accumulator at the start of an inference: the head's bias. */
void fm_exit_begin(const fm_exit_head *h, const fm_interp *head, int32_t *acc);

/* Add exit point e's contribution: copy its main tensor into the head input, run the chain,
 * acc += W_e . (p_e - zero point). Writes only the head's arena and acc. */
fm_status fm_exit_accumulate(const fm_exit_head *h, const fm_interp *main, fm_interp *head,
                             uint16_t e, int32_t *acc);

/* int8 logits from the accumulator (num_classes values). */
void fm_exit_logits(const fm_exit_head *h, const fm_interp *head, const int32_t *acc, int8_t *logits);

/* The confidence rule, in integer arithmetic (no floating point on the targets). The confidence
 * of int8 logits is their largest softmax probability, computed as 2^22 / S with S the sum over
 * classes of exp((logits[c] - max) * scale) in Q22 (fm_exit_exp_sum; scale: the head output's).
 * Exit e is confident when S <= conf_limit[e] = fm_exit_conf_limit(threshold), which holds
 * exactly when 2^22 / S >= threshold (the float32 value, NaN and > 1: never).
 * freeml_keras.exits.stop_rule mirrors both bit for bit. */
#define FM_EXIT_CONF_BITS 22
uint32_t fm_exit_exp_sum(const int8_t *logits, uint16_t n, float scale);
uint32_t fm_exit_conf_limit(float threshold);
uint8_t fm_exit_confident(const fm_exit_head *h, const fm_interp *head, uint16_t e, const int8_t *logits);

#ifdef __cplusplus
}
#endif
#endif
