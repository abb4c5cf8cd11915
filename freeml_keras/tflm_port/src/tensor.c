/* Accessors of a prepared interpreter: tensors, graph inputs and outputs, sizes, errors. */
#include "freeml/fm_internal.h"

static int valid(const fm_interp *it, int16_t t) { return t >= 0 && t < (int16_t)it->num_tensors; }

uint8_t *fm_tensor_data(const fm_interp *it, int16_t t)
{
    return it->ready && valid(it, t) ? fm_data(it, t) : NULL;
}

uint32_t fm_tensor_bytes(const fm_interp *it, int16_t t)
{
    return valid(it, t) ? it->tensors[t].bytes : 0;
}

int32_t fm_tensor_type(const fm_interp *it, int16_t t)
{
    return valid(it, t) ? it->tensors[t].type : -1;
}

int32_t fm_tensor_dims(const fm_interp *it, int16_t t, int32_t *dims)
{
    uint8_t i;
    if (!valid(it, t)) return -1;
    for (i = 0; i < it->tensors[t].ndim; i++) dims[i] = it->tensors[t].dims[i];
    return it->tensors[t].ndim;
}

float fm_tensor_scale(const fm_interp *it, int16_t t)
{
    return valid(it, t) ? it->tensors[t].scale : 0.0f;
}

int32_t fm_tensor_zero_point(const fm_interp *it, int16_t t)
{
    return valid(it, t) ? it->tensors[t].zero_point : 0;
}

int32_t fm_tensor_arena_offset(const fm_interp *it, int16_t t)
{
    return valid(it, t) ? fm_root(it, t)->offset : -1;
}

uint32_t fm_sizeof_interp(void) { return (uint32_t)sizeof(fm_interp); }
uint8_t fm_num_inputs(const fm_interp *it) { return it->num_inputs; }
uint8_t fm_num_outputs(const fm_interp *it) { return it->num_outputs; }
int16_t fm_input(const fm_interp *it, uint8_t i) { return i < it->num_inputs ? it->inputs[i] : -1; }
int16_t fm_output(const fm_interp *it, uint8_t i) { return i < it->num_outputs ? it->outputs[i] : -1; }
const fm_error *fm_last_error(const fm_interp *it) { return &it->err; }
uint32_t fm_state_needed(const fm_interp *it) { return it->state_needed; }
uint32_t fm_arena_needed(const fm_interp *it) { return it->arena_needed; }
uint16_t fm_num_ops(const fm_interp *it) { return it->num_ops; }
uint32_t fm_op_step_units(const fm_interp *it, uint16_t op) { return op < it->num_ops ? FM_OP(it, op)->step_units : 0u; }
uint32_t fm_op_unit_cost(const fm_interp *it, uint16_t op) { return op < it->num_ops ? FM_OP(it, op)->unit_cost : 0u; }
