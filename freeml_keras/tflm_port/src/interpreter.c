/* Resumable execution: fm_step runs units of operators from a cursor, fm_invoke a whole
 * inference. */
#include "freeml/fm_internal.h"

uint32_t fm_op_units(const fm_interp *it, uint16_t op)
{
    return op < it->num_ops ? FM_OP(it, op)->units : 0;
}

int32_t fm_op_code(const fm_interp *it, uint16_t op)
{
    return op < it->num_ops ? FM_OP(it, op)->code : -1;
}

int32_t fm_kernel_code(uint16_t k)
{
    return k < fm_num_kernels ? fm_kernels[k]->code : -1;
}

fm_status fm_step(fm_interp *it, fm_cursor *cur, uint32_t max_units, uint8_t *done)
{
    *done = 0;
    if (!it->ready) return fm_fail(it, FM_ERR_STATE, "interpreter not initialized", -1, -1, 0);
    while (max_units > 0 && cur->op < it->num_ops) {
        const fm_op *op = FM_OP(it, cur->op);
        uint32_t end;
        if (cur->unit >= op->units) {
            cur->op++;
            cur->unit = 0;
            continue;
        }
        end = op->units - cur->unit > max_units ? cur->unit + max_units : op->units;
        fm_kernels[op->kernel]->eval(it, op, cur->unit, end);
        max_units -= end - cur->unit;
        cur->unit = end;
    }
    while (cur->op < it->num_ops && cur->unit >= FM_OP(it, cur->op)->units) {
        cur->op++;
        cur->unit = 0;
    }
    *done = cur->op >= it->num_ops;
    return FM_OK;
}

fm_status fm_invoke(fm_interp *it)
{
    fm_cursor cur;
    uint8_t done = 0;
    cur.op = 0;
    cur.unit = 0;
    while (!done) {
        fm_status s = fm_step(it, &cur, 0xFFFFFFFFu, &done);
        if (s) return s;
    }
    return FM_OK;
}

