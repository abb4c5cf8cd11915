/* freeml tflm_port: a C99 int8 inference runtime for TFLite flatbuffers.
 *
 * The model is read in place (const memory, never copied or modified). The caller gives two
 * blocks of memory: `state` (tensor and operator tables, per-channel quantization parameters;
 * written once by fm_init, read-only afterwards, so it may live in NVM) and `arena` (the
 * activations, planned statically). No malloc, no hidden globals: everything is in fm_interp.
 *
 * Execution is a sequence of small resumable steps. An fm_cursor (operator index, unit inside
 * the operator) is all the progress there is: fm_step() runs at most N units and advances it;
 * a unit is one output row (convolution, pooling), one output value (fully connected, mean) or
 * one chunk of elements (element-wise ops). Units of one operator never read what they write.
 */
#ifndef FREEML_FM_H
#define FREEML_FM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FM_MAX_DIMS 5
#define FM_MAX_OP_INPUTS 8
#define FM_MAX_IO 16

typedef enum {
    FM_OK = 0,
    FM_ERR_ARG = 1,          /* bad argument from the caller */
    FM_ERR_FORMAT = 2,       /* the flatbuffer is malformed or inconsistent */
    FM_ERR_UNSUPPORTED = 3,  /* well-formed but uses something this runtime cannot run */
    FM_ERR_MEMORY = 4,       /* state or arena block too small (sizes are reported) */
    FM_ERR_STATE = 5         /* call order (e.g. fm_step before fm_init succeeded) */
} fm_status;

/* Tensor element types (TFLite TensorType values). */
enum { FM_FLOAT32 = 0, FM_INT32 = 2, FM_UINT8 = 3, FM_INT64 = 4, FM_INT16 = 7, FM_INT8 = 9, FM_RESOURCE = 13 };

typedef struct fm_tensor fm_tensor;
typedef struct fm_op fm_op;

/* Progress of one inference: operator index and unit inside that operator. */
typedef struct {
    uint16_t op;
    uint32_t unit;
} fm_cursor;

/* Why the last call failed: a static message, the operator and tensor involved (-1 if none),
 * the byte offset in the model for format errors (-1 if none) and a value the message refers
 * to (an operator code, a size; 0 if none). */
typedef struct {
    const char *msg;
    int32_t op;
    int32_t tensor;
    int32_t offset;
    int32_t value;
} fm_error;

typedef struct {
    const uint8_t *model;
    uint32_t model_len;
    uint8_t *state;
    uint32_t state_len;
    uint32_t state_used;
    uint8_t *arena;
    uint32_t arena_len;
    uint32_t arena_needed;   /* activation bytes the plan needs */
    uint32_t state_needed;   /* state bytes fm_init needs */
    fm_tensor *tensors;
    uint16_t num_tensors;
    fm_op **op_at;           /* each operator's record (records differ in size: FM_OP) */
    uint16_t num_ops;
    int16_t inputs[FM_MAX_IO];
    int16_t outputs[FM_MAX_IO];
    uint8_t num_inputs;
    uint8_t num_outputs;
    uint8_t ready;
    fm_error err;
    /* Precomputed requantization parameters (the model's "freeml_prepare" metadata), used while
     * fm_init prepares the operators; model_id_pos is the position of its model id in the
     * model (0: the model has none). */
    const uint8_t *pre_blob;
    uint32_t pre_blob_len;
    uint32_t pre_ops;
    const uint8_t *pre_words;
    uint32_t pre_n;
    uint32_t pre_i;
    uint8_t pre_err;
    uint32_t model_id;
    uint32_t model_id_pos;
} fm_interp;

/* Size of fm_interp, for bindings that allocate it as an opaque block. */
uint32_t fm_sizeof_interp(void);

/* Parse, validate, prepare every operator and plan the arena. The state requirement is known
 * before anything is written: with a too small `state` (or NULL) it returns FM_ERR_MEMORY with
 * it->state_needed set; with a too small arena, FM_ERR_MEMORY with it->arena_needed set. */
fm_status fm_init(fm_interp *it, const uint8_t *model, uint32_t model_len,
                  uint8_t *state, uint32_t state_len, uint8_t *arena, uint32_t arena_len);

/* The same for subgraph `subgraph` of the model (fm_init is subgraph 0): e.g. the exit head. */
fm_status fm_init_subgraph(fm_interp *it, const uint8_t *model, uint32_t model_len,
                           uint16_t subgraph, uint8_t *state, uint32_t state_len, uint8_t *arena,
                           uint32_t arena_len);

/* Run at most max_units units from *cur and advance it; returns FM_OK. *done is set to 1 when the
 * whole inference has finished (cur->op == num_ops). */
fm_status fm_step(fm_interp *it, fm_cursor *cur, uint32_t max_units, uint8_t *done);

/* Run a whole inference from the start (inputs must have been written). */
fm_status fm_invoke(fm_interp *it);

/* Number of units of operator `op` (0 for operators that are aliases, e.g. RESHAPE). */
uint32_t fm_op_units(const fm_interp *it, uint16_t op);

/* Builtin operator code of operator `op`. */
int32_t fm_op_code(const fm_interp *it, uint16_t op);

/* Builtin operator code of kernel k of this build, -1 past the last: the operators it runs. */
int32_t fm_kernel_code(uint16_t k);

/* The intermittent runtime's plan (fm_plan_ops): most units of `op` per atomic step and the
 * metadata cost of one unit (0 when unknown). */
uint32_t fm_op_step_units(const fm_interp *it, uint16_t op);
uint32_t fm_op_unit_cost(const fm_interp *it, uint16_t op);

/* Input / output i: data pointer, byte size, type, shape, quantization. */
uint8_t *fm_tensor_data(const fm_interp *it, int16_t tensor);
uint32_t fm_tensor_bytes(const fm_interp *it, int16_t tensor);
int32_t fm_tensor_type(const fm_interp *it, int16_t tensor);
int32_t fm_tensor_dims(const fm_interp *it, int16_t tensor, int32_t *dims);
float fm_tensor_scale(const fm_interp *it, int16_t tensor);
int32_t fm_tensor_zero_point(const fm_interp *it, int16_t tensor);
int32_t fm_tensor_arena_offset(const fm_interp *it, int16_t tensor);

/* Graph inputs / outputs (tensor indices) and the last error. */
uint8_t fm_num_inputs(const fm_interp *it);
uint8_t fm_num_outputs(const fm_interp *it);
int16_t fm_input(const fm_interp *it, uint8_t i);
int16_t fm_output(const fm_interp *it, uint8_t i);
const fm_error *fm_last_error(const fm_interp *it);
uint32_t fm_state_needed(const fm_interp *it);
uint32_t fm_arena_needed(const fm_interp *it);
uint16_t fm_num_ops(const fm_interp *it);

#ifdef __cplusplus
}
#endif
#endif
