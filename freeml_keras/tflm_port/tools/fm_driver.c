/* Host test driver for the runtime (not part of the library; may use stdio).
 *
 *   fm_driver run MODEL INPUTS OUTPUTS [MAX_UNITS]  run every input (raw int8 records of the
 *                                                   model's input size) and write the outputs;
 *                                                   MAX_UNITS > 0 runs through fm_step
 *   fm_driver mutate MODEL SEED COUNT               COUNT seeded truncated / bit-flipped /
 *                                                   overwritten copies: each must load and run
 *                                                   or be refused, never crash
 *   fm_driver bench MODEL N                         time N inferences (zero input)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "freeml/fm.h"

#define MAX_MODEL (8u << 20)
#define MAX_STATE (1u << 20)
#define MAX_ARENA (4u << 20)

static uint8_t model_buf[MAX_MODEL] __attribute__((aligned(16)));
static uint8_t work_buf[MAX_MODEL] __attribute__((aligned(16)));
static uint8_t state_buf[MAX_STATE] __attribute__((aligned(16)));
static uint8_t arena_buf[MAX_ARENA] __attribute__((aligned(16)));

static long read_file(const char *path, uint8_t *buf, uint32_t cap)
{
    FILE *f = fopen(path, "rb");
    long n;
    if (!f) return -1;
    n = (long)fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void report(const char *what, const fm_interp *it, fm_status s)
{
    const fm_error *e = fm_last_error(it);
    fprintf(stderr, "%s: status %d: %s (op %ld, tensor %ld, offset %ld, value %ld)\n", what, (int)s,
            e->msg ? e->msg : "?", (long)e->op, (long)e->tensor, (long)e->offset, (long)e->value);
}

static fm_status load(fm_interp *it, const uint8_t *model, uint32_t len)
{
    return fm_init(it, model, len, state_buf, MAX_STATE, arena_buf, MAX_ARENA);
}

static int cmd_run(const char *model_path, const char *in_path, const char *out_path, uint32_t max_units)
{
    static uint8_t inputs[MAX_MODEL];
    fm_interp it;
    long n = read_file(model_path, model_buf, MAX_MODEL), ni;
    uint32_t in_bytes, out_bytes, count, i;
    FILE *out;
    fm_status s;
    if (n < 0) { fprintf(stderr, "cannot read %s\n", model_path); return 2; }
    s = load(&it, model_buf, (uint32_t)n);
    if (s) { report("init", &it, s); return 1; }
    in_bytes = fm_tensor_bytes(&it, fm_input(&it, 0));
    out_bytes = fm_tensor_bytes(&it, fm_output(&it, 0));
    ni = read_file(in_path, inputs, MAX_MODEL);
    if (ni < 0 || in_bytes == 0 || (uint32_t)ni % in_bytes) { fprintf(stderr, "bad inputs file\n"); return 2; }
    count = (uint32_t)ni / in_bytes;
    out = fopen(out_path, "wb");
    if (!out) return 2;
    for (i = 0; i < count; i++) {
        memcpy(fm_tensor_data(&it, fm_input(&it, 0)), inputs + i * in_bytes, in_bytes);
        if (max_units) {
            fm_cursor cur = {0, 0};
            uint8_t done = 0;
            while (!done && (s = fm_step(&it, &cur, max_units, &done)) == FM_OK) {}
        } else {
            s = fm_invoke(&it);
        }
        if (s) { report("invoke", &it, s); fclose(out); return 1; }
        fwrite(fm_tensor_data(&it, fm_output(&it, 0)), 1, out_bytes, out);
    }
    fclose(out);
    printf("arena %lu state %lu inferences %lu\n", (unsigned long)fm_arena_needed(&it),
           (unsigned long)fm_state_needed(&it), (unsigned long)count);
    return 0;
}

static uint32_t rng_state;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static int cmd_mutate(const char *model_path, uint32_t seed, uint32_t count)
{
    static const uint32_t words[] = {0, 1, 2, 4, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
                                     0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu, 16, 255, 256, 65536};
    fm_interp it;
    long n = read_file(model_path, model_buf, MAX_MODEL);
    uint32_t i, ok = 0, refused = 0, len;
    if (n < 16) { fprintf(stderr, "cannot read %s\n", model_path); return 2; }
    rng_state = seed * 2654435761u + 1u;
    for (i = 0; i < count; i++) {
        uint32_t kind = rnd() % 4, k, edits;
        fm_status s;
        len = (uint32_t)n;
        memcpy(work_buf, model_buf, len);
        switch (kind) {
        case 0:  /* truncate */
            len = rnd() % len;
            break;
        case 1:  /* flip bits */
            edits = 1 + rnd() % 8;
            for (k = 0; k < edits; k++) work_buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
            break;
        case 2:  /* random bytes */
            edits = 1 + rnd() % 16;
            for (k = 0; k < edits; k++) work_buf[rnd() % len] = (uint8_t)rnd();
            break;
        default: /* an interesting 32-bit word at a 4-aligned position (offsets, lengths) */
            edits = 1 + rnd() % 4;
            for (k = 0; k < edits; k++) {
                uint32_t pos = (rnd() % (len / 4)) * 4, w = words[rnd() % (sizeof words / sizeof words[0])];
                work_buf[pos] = (uint8_t)w; work_buf[pos + 1] = (uint8_t)(w >> 8);
                work_buf[pos + 2] = (uint8_t)(w >> 16); work_buf[pos + 3] = (uint8_t)(w >> 24);
            }
            break;
        }
        s = load(&it, work_buf, len);
        if (s == FM_OK) {
            uint8_t k2;
            for (k2 = 0; k2 < fm_num_inputs(&it); k2++) {
                int16_t t = fm_input(&it, k2);
                memset(fm_tensor_data(&it, t), (int)(rnd() & 0xFF), fm_tensor_bytes(&it, t));
            }
            s = fm_invoke(&it);
            if (s) { report("invoke after successful init", &it, s); return 1; }
            ok++;
        } else {
            if (!fm_last_error(&it)->msg) { fprintf(stderr, "error without a message\n"); return 1; }
            refused++;
        }
    }
    printf("mutations %lu ran %lu refused %lu\n", (unsigned long)count, (unsigned long)ok,
           (unsigned long)refused);
    return 0;
}

static int cmd_bench(const char *model_path, uint32_t count)
{
    fm_interp it;
    long n = read_file(model_path, model_buf, MAX_MODEL);
    uint32_t i;
    clock_t t0;
    fm_status s;
    if (n < 0) return 2;
    s = load(&it, model_buf, (uint32_t)n);
    if (s) { report("init", &it, s); return 1; }
    t0 = clock();
    for (i = 0; i < count; i++) fm_invoke(&it);
    printf("%.3f us per inference\n", 1e6 * (double)(clock() - t0) / CLOCKS_PER_SEC / count);
    {   /* per operator, through the resumable-step interface */
        uint16_t op;
        for (op = 0; op < fm_num_ops(&it); op++) {
            fm_cursor cur;
            uint8_t done;
            clock_t t1 = clock();
            for (i = 0; i < count; i++) {
                cur.op = op;
                cur.unit = 0;
                fm_step(&it, &cur, fm_op_units(&it, op) ? fm_op_units(&it, op) : 1, &done);
            }
            printf("  op %u code %ld units %lu: %.3f us\n", (unsigned)op, (long)fm_op_code(&it, op),
                   (unsigned long)fm_op_units(&it, op), 1e6 * (double)(clock() - t1) / CLOCKS_PER_SEC / count);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "run"))
        return cmd_run(argv[2], argv[3], argv[4], argc > 5 ? (uint32_t)strtoul(argv[5], NULL, 10) : 0);
    if (argc == 5 && !strcmp(argv[1], "mutate"))
        return cmd_mutate(argv[2], (uint32_t)strtoul(argv[3], NULL, 10), (uint32_t)strtoul(argv[4], NULL, 10));
    if (argc == 4 && !strcmp(argv[1], "bench"))
        return cmd_bench(argv[2], (uint32_t)strtoul(argv[3], NULL, 10));
    fprintf(stderr, "usage: fm_driver run MODEL INPUTS OUTPUTS [MAX_UNITS] | mutate MODEL SEED COUNT | bench MODEL N\n");
    return 2;
}
