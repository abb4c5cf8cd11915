/* Instruction-counting TCG plugin for qemu-system-arm 7.2 (plugin API version 1).
 *
 * Counts every executed guest instruction exactly (an inline 64-bit add before each
 * instruction), per function symbol (exclusive: the instructions whose address lies in that
 * function), and records the running total each time the instruction at a marker address
 * executes (the first instruction of fm_target_mark). At exit it writes, to the file given by
 * out=PATH (or QEMU's log):
 *     total <N>
 *     mark <i> <running total at the i-th marker>
 *     symbol <name> <N>
 * Arguments: out=PATH, mark=0xADDR (optional), symbols=on|off (default on).
 *
 * Debian ships no qemu-plugin.h, so the handful of declarations used are written out below,
 * as QEMU 7.2's include/qemu/qemu-plugin.h defines them. Single vCPU (mps2 boards have one). */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- QEMU 7.2 plugin API (version 1), the subset used ---- */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct {
    const char *target_name;
    struct { int min; int cur; } version;
    bool system_emulation;
    union { struct { int smp_vcpus; int max_vcpus; } system; };
} qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
const char *qemu_plugin_insn_symbol(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op,
                                                void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

/* ---- state ---- */
#define MAX_SYMBOLS 4096
#define MAX_MARKS 65536

typedef struct {
    const char *name;      /* QEMU's own string, stable for the whole run */
    uint64_t count;
} symbol_count;

static uint64_t total;
static symbol_count symbols[MAX_SYMBOLS];
static unsigned n_symbols;
static uint64_t unknown_count;          /* instructions outside any symbol */
static uint64_t mark_addr;
static bool have_mark;
static bool per_symbol = true;
static uint64_t marks[MAX_MARKS];
static unsigned n_marks;
static unsigned dropped_marks;
static char out_path[4096];

/* Slot for a symbol name: open addressing on the string's address (QEMU returns the same
 * pointer for the same symbol). */
static uint64_t *symbol_counter(const char *name)
{
    unsigned i, h;
    if (!name) return &unknown_count;
    h = (unsigned)(((uintptr_t)name >> 3) * 2654435761u) % MAX_SYMBOLS;
    for (i = 0; i < MAX_SYMBOLS; i++) {
        symbol_count *s = &symbols[(h + i) % MAX_SYMBOLS];
        if (s->name == name) return &s->count;
        if (s->name == NULL) {
            s->name = name;
            n_symbols++;
            return &s->count;
        }
    }
    return &unknown_count;
}

static void on_mark(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    (void)udata;
    if (n_marks < MAX_MARKS) marks[n_marks++] = total;
    else dropped_marks++;
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (have_mark && qemu_plugin_insn_vaddr(insn) == mark_addr)
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
        if (per_symbol)
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64,
                                                       symbol_counter(qemu_plugin_insn_symbol(insn)), 1);
    }
}

static void write_report(FILE *f)
{
    unsigned i;
    fprintf(f, "total %" PRIu64 "\n", total);
    for (i = 0; i < n_marks; i++) fprintf(f, "mark %u %" PRIu64 "\n", i, marks[i]);
    if (dropped_marks) fprintf(f, "dropped_marks %u\n", dropped_marks);
    for (i = 0; i < MAX_SYMBOLS; i++)
        if (symbols[i].name && symbols[i].count)
            fprintf(f, "symbol %s %" PRIu64 "\n", symbols[i].name, symbols[i].count);
    if (unknown_count) fprintf(f, "symbol ? %" PRIu64 "\n", unknown_count);
}

static void on_exit_cb(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    if (out_path[0]) {
        FILE *f = fopen(out_path, "w");
        if (f) {
            write_report(f);
            fclose(f);
            return;
        }
        qemu_plugin_outs("insn_count: cannot open the out= file\n");
    }
    {
        char line[64];
        snprintf(line, sizeof line, "total %" PRIu64 "\n", total);
        qemu_plugin_outs(line);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", a + 4);
        } else if (strncmp(a, "mark=", 5) == 0) {
            mark_addr = strtoull(a + 5, NULL, 0) & ~(uint64_t)1;   /* drop the Thumb bit */
            have_mark = true;
        } else if (strcmp(a, "symbols=off") == 0) {
            per_symbol = false;
        } else if (strcmp(a, "symbols=on") != 0) {
            fprintf(stderr, "insn_count: unknown argument %s (out=PATH, mark=ADDR, symbols=on|off)\n", a);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
