/* One inference of a model with the tflm_port runtime on a target, measured per operator.
 *
 * Generated headers (freeml_keras.targets.build_model_program): model_data.h (the flatbuffer,
 * from convert.export_c, symbol fm_model, in section .fram), model_io.h (model_input[],
 * FM_STATE_BYTES, FM_ARENA_BYTES). Output lines:
 *     @init <status> <state_used> <arena_needed>      (and @error / @need on failure)
 *     @op <index> <builtin code> <units>               one per measured fm_step, in order
 *     @output <int8 values>                            op-by-op run
 *     @output_invoke <int8 values>                     fm_invoke() run on the same input
 * Mark pairs, in order: fm_init, one per @op line, fm_invoke. */
#include <stdint.h>
#include <string.h>

#include "fm_target.h"
#include "freeml/fm.h"
#include "model_data.h"
#include "model_io.h"

/* 16-byte aligned like the host runtime's buffers (GCC / clang attribute: C99 has none). */
static uint8_t state[FM_STATE_BYTES] __attribute__((aligned(16)));
static uint8_t arena[FM_ARENA_BYTES] __attribute__((aligned(16)));
static fm_interp interp;

static void put_field(int32_t v)
{
    fm_target_putc(' ');
    fm_target_put_i32(v);
}

static void put_output(const char *key)
{
    const int16_t t = fm_output(&interp, 0);
    const int8_t *y = (const int8_t *)fm_tensor_data(&interp, t);
    const uint32_t n = fm_tensor_bytes(&interp, t);
    uint32_t i;
    fm_target_puts(key);
    for (i = 0; i < n; i++) put_field(y[i]);
    fm_target_putc('\n');
}

static int set_input(void)
{
    const int16_t t = fm_input(&interp, 0);
    if (fm_tensor_bytes(&interp, t) != (uint32_t)sizeof model_input) {
        fm_target_puts("@error input size");
        put_field((int32_t)fm_tensor_bytes(&interp, t));
        fm_target_putc('\n');
        return 0;
    }
    memcpy(fm_tensor_data(&interp, t), model_input, sizeof model_input);
    return 1;
}

int main(void)
{
    fm_status s;
    fm_cursor cur;
    uint8_t done = 0;

    fm_target_mark();
    s = fm_init(&interp, fm_model, fm_model_len, state, sizeof state, arena, sizeof arena);
    fm_target_mark();
    fm_target_puts("@init");
    put_field((int32_t)s);
    put_field((int32_t)interp.state_used);
    put_field((int32_t)fm_arena_needed(&interp));
    fm_target_putc('\n');
    if (s != FM_OK) {
        const fm_error *e = fm_last_error(&interp);
        fm_target_puts("@error ");
        fm_target_puts(e->msg ? e->msg : "?");
        put_field(e->op);
        put_field(e->tensor);
        put_field(e->offset);
        put_field(e->value);
        fm_target_puts("\n@need");
        put_field((int32_t)interp.state_needed);
        put_field((int32_t)interp.arena_needed);
        fm_target_putc('\n');
        return 2;
    }
    if (!set_input()) return 3;

    cur.op = 0;
    cur.unit = 0;
    while (!done) {
        const uint16_t op = cur.op;
        fm_target_mark();
        s = fm_step(&interp, &cur, fm_op_units(&interp, op), &done);
        fm_target_mark();
        if (s != FM_OK) return 4;
        fm_target_puts("@op");
        put_field(op);
        put_field(fm_op_code(&interp, op));
        put_field((int32_t)fm_op_units(&interp, op));
        fm_target_putc('\n');
    }
    put_output("@output");

    if (!set_input()) return 3;
    fm_target_mark();
    s = fm_invoke(&interp);
    fm_target_mark();
    if (s != FM_OK) return 5;
    put_output("@output_invoke");
    return 0;
}
