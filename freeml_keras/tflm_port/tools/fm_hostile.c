/* Hostile NVM: the code that reads NVM after a power failure (checkpoint records, fm_resume, the
 * exit head's accumulator, the prepared image of fm_power_on) fed damaged NVM, under ASan+UBSan.
 *
 *   fm_hostile MODEL OTHER_MODEL INPUTS CASES SEED [POLICY]
 *
 * INPUTS holds two raw int8 inputs of MODEL (A, then B). OTHER_MODEL is another model whose
 * sealed image is offered to MODEL's power-on. POLICY (models with an exit head): "none" (run to
 * the end), "T" (stop at the metadata's confidence thresholds) or an exit index (stop there).
 *
 * The driver runs every inference in this process on an NVM region in memory: an uninterrupted
 * run of A and of B (cold fm_power_on, fm_prepare_input, input, fm_start, fm_resume) gives the
 * references (output bytes and exit answered) and an NVM snapshot after every commit. Then CASES
 * seeded cases: a snapshot of A's run taken mid-inference (or of B's, for `stale_other`) is
 * damaged in one of the ways below, then fm_power_on and fm_resume run it to completion with a
 * bound on the steps. Each case ends as:
 *   refused   a non-OK status (counted by name: ARG FORMAT UNSUPPORTED MEMORY STATE),
 *   warm_ok   completed on the sealed image (warm restart), output bit-exact to the reference,
 *   cold_ok   completed after the image was prepared afresh, output bit-exact,
 *   wrong     completed with an output (or exit) equal to no admissible reference,
 *   hang      more steps than any resume can need (the runtime must never loop),
 *   misused   an image damage that power-on should have rejected was used warm.
 * A crash is an ASan/UBSan abort of the process (the caller sees the exit status).
 *
 * Damage kinds (the admissible answers: A's reference unless said otherwise). These stay inside
 * the checkpoint protocol's model (fm_checkpoint.h: a power failure anywhere, torn writes) or
 * are detectable by construction (tag = ~seq, the seal, the image sum with verify):
 *   rec_corrupt   random bytes or bit flips in one or both slots, each damaged slot left
 *                 invalid (its tag no longer ~seq): the other slot's record or nothing
 *   torn          a commit torn anywhere (a prefix, or any subset of its bytes in write order:
 *                 sequence number, body, tag) over the slot it overwrites, the arena as the
 *                 step before that commit left it: the previous record or the new one
 *   stale_prev    both slots as they were one commit earlier (the newest record lost)
 *   stale_other   record and arena of another inference (input B at another step): B's answer
 *   ckpt_random   random bytes over the whole checkpoint region
 *   img_foreign   image and state blocks sealed for OTHER_MODEL (same address, same blocks)
 *   img_config    image sealed for another step configuration (units mode, granularity 3)
 *   seal_torn     a preparation interrupted while the seal was written (a strict prefix of it)
 *   img_flip      1-8 bit flips in the sealed image or its state blocks, power-on with verify=1:
 *                 must be detected by the sum and prepared afresh, never used (misused otherwise)
 *   img_random    random bytes over the whole image (verify 0 or 1)
 * and, beyond what the record format can detect (counted apart, never asserted: the record has
 * no check over its body and a record carries no identity of its arena, fm_checkpoint.h):
 *   x_body_flip   bit flips in the operator, flags, unit or accumulator of the latest valid
 *                 record (its tag still ~seq)
 *   x_stale_deep  both slots as they were 2-6 commits earlier, the arena as it is now
 *   x_other_rec   the records of input B's run at the same step over A's arena (A or B)
 *
 * Prints one line of key=value counts: cases, per kind, per outcome, per refusal status, and the
 * same per kind for the x_ kinds ("x_" outcome keys). Exit status 0 when no in-model case ended
 * wrong, hung or misused an image; 1 otherwise; 2 on a usage or set-up error.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "freeml/fm.h"
#include "freeml/fm_checkpoint.h"
#include "freeml/fm_exit.h"
#include "freeml/fm_persist.h"

const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

#define STATE_PROBE (1u << 20)
#define HEAD_ARENA_BYTES (1u << 16)
#define ALIGN16(n) (((n) + 15u) & ~(uint32_t)15u)
#define MAX_OUT 4096u

enum {
    K_REC_CORRUPT, K_TORN, K_STALE_PREV, K_STALE_OTHER, K_CKPT_RANDOM, K_IMG_FOREIGN, K_IMG_CONFIG,
    K_SEAL_TORN, K_IMG_FLIP, K_IMG_RANDOM, K_IN_MODEL,
    K_X_BODY_FLIP = K_IN_MODEL, K_X_STALE_DEEP, K_X_OTHER_REC, K_COUNT
};
static const char *const KIND[K_COUNT] = {"rec_corrupt", "torn", "stale_prev", "stale_other", "ckpt_random",
                                          "img_foreign", "img_config", "seal_torn", "img_flip", "img_random",
                                          "x_body_flip", "x_stale_deep", "x_other_rec"};
enum { O_REFUSED, O_WARM_OK, O_COLD_OK, O_WRONG, O_HANG, O_MISUSED, O_COUNT };
static const char *const OUTCOME[O_COUNT] = {"refused", "warm_ok", "cold_ok", "wrong", "hang", "misused"};
static const char *const STATUS[6] = {"OK", "ARG", "FORMAT", "UNSUPPORTED", "MEMORY", "STATE"};

/* ---- the platform: NVM in memory, one model buffer at one address --------------------------- */

static uint8_t *g_nvm, *g_model, *g_ram;
static uint32_t g_nvm_len, g_len_a, g_len_b;
static uint32_t off_arena, off_image, off_state, off_head, ckpt_region;
static uint8_t *g_model_a, *g_model_b;
static fm_blocks g_blocks;
static fm_nvm g_io;
static fm_step_config g_cfg, g_cfg2;
static int16_t g_stop_at = -1;
static uint8_t g_thresholds = 0;

static void nvm_write(fm_nvm *nvm, uint32_t offset, const uint8_t *src, uint32_t n)
{
    memcpy(nvm->mem + offset, src, n);
}

static uint64_t g_rng;
static uint32_t rnd(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 16);
}
static uint32_t below(uint32_t n) { return n ? rnd() % n : 0u; }

static uint8_t *read_all(const char *path, uint32_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1u);
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (uint32_t)n;
    return buf;
}

/* The model in the model buffer (one address: what a device flashes in place). */
static void flash(int which)
{
    const uint8_t *m = which ? g_model_b : g_model_a;
    const uint32_t n = which ? g_len_b : g_len_a;
    memcpy(g_model, m, n);
    g_blocks.model_len = n;
}

/* State and arena needs of a model (and of its exit head). */
static int probe(const uint8_t *model, uint32_t len, uint32_t *state, uint32_t *arena, uint32_t *head_state)
{
    static fm_interp it;
    uint8_t *scratch = (uint8_t *)malloc(STATE_PROBE);
    uint16_t sg;
    fm_status s = fm_init(&it, model, len, scratch, STATE_PROBE, NULL, 0);
    if (s != FM_OK && s != FM_ERR_MEMORY) return 0;
    *state = fm_state_needed(&it);
    *arena = fm_arena_needed(&it);
    *head_state = 0;
    if (fm_exit_find(model, len, &sg) == FM_OK) {
        s = fm_init_subgraph(&it, model, len, sg, scratch, STATE_PROBE, NULL, 0);
        if (s != FM_OK && s != FM_ERR_MEMORY) return 0;
        *head_state = fm_state_needed(&it);
    }
    free(scratch);
    return 1;
}

/* ---- runs ------------------------------------------------------------------------------------ */

typedef struct {
    uint8_t out[MAX_OUT];
    uint32_t out_len;
    int16_t exit_index;
} answer;

typedef struct {
    uint8_t **snap;             /* NVM after each commit; snap[0]: input written, before fm_start */
    uint32_t count;             /* snapshots; the last holds the "done" record */
    answer ref;
} run_log;

static void policy(fm_intermittent *r)
{
    if (r->exits) {
        r->stop_at_exit = g_stop_at;
        r->use_thresholds = g_thresholds;
    }
}

static void read_answer(const fm_intermittent *r, int16_t exit_index, const int8_t *logits, answer *a)
{
    const int16_t t = fm_output(r->it, 0);
    a->exit_index = exit_index;
    if (r->exits && exit_index < (int16_t)r->exits->num_exits) {
        a->out_len = r->exits->num_classes;
        memcpy(a->out, logits, a->out_len);
    } else {
        a->out_len = fm_tensor_bytes(r->it, t);
        if (a->out_len > MAX_OUT) a->out_len = MAX_OUT;
        memcpy(a->out, fm_tensor_data(r->it, t), a->out_len);
    }
}

static uint8_t *snapshot(void)
{
    uint8_t *s = (uint8_t *)malloc(g_nvm_len);
    if (!s) exit(2);
    memcpy(s, g_nvm, g_nvm_len);
    return s;
}

/* An uninterrupted inference from a cold power-on with every commit's NVM kept. */
static int reference_run(const uint8_t *input, uint32_t input_len, run_log *log)
{
    fm_prepared *image = (fm_prepared *)(void *)(g_nvm + off_image);
    fm_intermittent r;
    uint8_t warm, done = 0;
    int8_t logits[FM_CKPT_MAX_CLASSES];
    int16_t idx = 0, in_t;
    uint32_t cap = 64;
    fm_status s;
    memset(g_nvm, 0, g_nvm_len);
    s = fm_power_on(image, &g_io, &g_blocks, &g_cfg, 0u, 1u, &r, &warm);
    if (s) return 0;
    policy(&r);
    in_t = fm_input(r.it, 0);
    if (fm_tensor_bytes(r.it, in_t) != input_len) {
        fprintf(stderr, "input must be %u bytes\n", (unsigned)fm_tensor_bytes(r.it, in_t));
        return 0;
    }
    if (fm_prepare_input(&r)) return 0;
    g_io.write(&g_io, (uint32_t)(fm_tensor_data(r.it, in_t) - g_nvm), input, input_len);
    log->snap = (uint8_t **)malloc(cap * sizeof *log->snap);
    log->count = 0;
    log->snap[log->count++] = snapshot();
    if (fm_start(&r)) return 0;
    log->snap[log->count++] = snapshot();
    while (!done) {
        s = fm_resume(&r, 1u, &done);
        if (s) return 0;
        if (log->count == cap) {
            cap *= 2;
            log->snap = (uint8_t **)realloc(log->snap, cap * sizeof *log->snap);
            if (!log->snap) return 0;
        }
        log->snap[log->count++] = snapshot();
    }
    if (fm_answer(&r, &idx, logits)) return 0;
    read_answer(&r, idx, logits, &log->ref);
    return 1;
}

/* The image region (fm_prepared, the state blocks) of a sealed preparation of `which` with cfg. */
static uint8_t *sealed_image(int which, const fm_step_config *cfg)
{
    fm_prepared *image = (fm_prepared *)(void *)(g_nvm + off_image);
    fm_intermittent r;
    uint8_t warm, *img;
    flash(which);
    memset(g_nvm, 0, g_nvm_len);
    if (fm_power_on(image, &g_io, &g_blocks, cfg, 0u, 1u, &r, &warm)) return NULL;
    img = (uint8_t *)malloc(g_nvm_len - off_image);
    if (img) memcpy(img, g_nvm + off_image, g_nvm_len - off_image);
    flash(0);
    return img;
}

/* ---- damage ---------------------------------------------------------------------------------- */

static uint32_t g_rec;          /* bytes of one record for the model's exit head */

static uint8_t slot_valid(const uint8_t *slot)
{
    uint32_t seq, tag;
    memcpy(&seq, slot, 4);
    memcpy(&tag, slot + g_rec - 4u, 4);
    return tag == ~seq;
}

static uint32_t slot_seq(const uint8_t *slot)
{
    uint32_t seq;
    memcpy(&seq, slot, 4);
    return seq;
}

/* Index of the slot holding the latest valid record in an NVM image (-1: none). */
static int latest_slot(const uint8_t *nvm)
{
    const uint8_t va = slot_valid(nvm), vb = slot_valid(nvm + g_rec);
    if (!va && !vb) return -1;
    if (va && vb) return (int32_t)(slot_seq(nvm + g_rec) - slot_seq(nvm)) > 0 ? 1 : 0;
    return vb ? 1 : 0;
}

static void flip_bits(uint8_t *p, uint32_t n, uint32_t flips)
{
    while (flips--) {
        const uint32_t at = below(n);
        p[at] ^= (uint8_t)(1u << below(8));
    }
}

/* One slot damaged until its tag is no longer ~seq. */
static void corrupt_slot(uint8_t *slot)
{
    do {
        if (below(2)) {
            uint32_t i;
            for (i = 0; i < g_rec; i++) slot[i] = (uint8_t)rnd();
        } else {
            flip_bits(slot, g_rec, 1u + below(6));
        }
    } while (slot_valid(slot));
}

/* A commit from `old` to `new` (one slot) stopped somewhere: an address-order prefix (fm_nvm
 * in_order), or the three ordered writes of fm_ckpt_commit with any subset of one write's
 * bytes stored (the bytes of one write in any order). */
static void tear(uint8_t *slot, const uint8_t *old, const uint8_t *new_rec)
{
    uint32_t i;
    memcpy(slot, old, g_rec);
    if (below(2)) {
        const uint32_t n = below(g_rec);
        memcpy(slot, new_rec, n);
    } else {
        const uint32_t phase = below(3);     /* the write that was stopped */
        uint32_t lo, hi;
        if (phase >= 1u) memcpy(slot, new_rec, 4);
        if (phase >= 2u) memcpy(slot + 4, new_rec + 4, g_rec - 8u);
        lo = phase == 0u ? 0u : phase == 1u ? 4u : g_rec - 4u;
        hi = phase == 0u ? 4u : phase == 1u ? g_rec - 4u : g_rec;
        for (i = lo; i < hi; i++)
            if (below(2)) slot[i] = new_rec[i];
    }
}

typedef struct {
    int kind;
    uint8_t verify;
    uint8_t ref_b_ok;           /* B's answer is admissible */
    uint8_t ref_a_ok;           /* A's answer is admissible */
    uint8_t must_be_cold;       /* the image was damaged: a warm power-on misuses it */
    const fm_step_config *cfg;
} case_info;

static run_log g_a, g_b;
static uint8_t *g_img_foreign, *g_img_config;

/* A mid-inference snapshot index of a run: a record that is running, not done. */
static uint32_t mid(const run_log *log)
{
    return 1u + below(log->count - 2u);
}

static void damage(case_info *c)
{
    uint32_t k, i;
    const uint32_t img_len = g_nvm_len - off_image;
    fm_prepared *image = (fm_prepared *)(void *)(g_nvm + off_image);
    c->verify = (uint8_t)below(2);
    c->ref_a_ok = 1;
    c->ref_b_ok = 0;
    c->must_be_cold = 0;
    c->cfg = &g_cfg;
    switch (c->kind) {
    case K_REC_CORRUPT: {
        const uint32_t which = below(3);  /* slot 0, slot 1, both */
        memcpy(g_nvm, g_a.snap[mid(&g_a)], g_nvm_len);
        if (which != 1u) corrupt_slot(g_nvm);
        if (which != 0u) corrupt_slot(g_nvm + g_rec);
        break;
    }
    case K_TORN: {
        int slot;
        k = 1u + below(g_a.count - 1u);          /* the commit torn: fm_start's .. the last */
        memcpy(g_nvm, g_a.snap[k], g_nvm_len);   /* its step has run: the arena after it */
        slot = latest_slot(g_a.snap[k]);
        if (slot < 0) exit(2);
        tear(g_nvm + (uint32_t)slot * g_rec, g_a.snap[k - 1u] + (uint32_t)slot * g_rec,
             g_a.snap[k] + (uint32_t)slot * g_rec);
        break;
    }
    case K_STALE_PREV:
        k = 2u + below(g_a.count - 2u);
        memcpy(g_nvm, g_a.snap[k], g_nvm_len);
        memcpy(g_nvm, g_a.snap[k - 1u], ckpt_region);
        break;
    case K_STALE_OTHER:
        memcpy(g_nvm, g_b.snap[mid(&g_b)], g_nvm_len);
        c->ref_a_ok = 0;
        c->ref_b_ok = 1;
        break;
    case K_CKPT_RANDOM:
        memcpy(g_nvm, g_a.snap[mid(&g_a)], g_nvm_len);
        for (i = 0; i < ckpt_region; i++) g_nvm[i] = (uint8_t)rnd();
        break;
    case K_IMG_FOREIGN:
    case K_IMG_CONFIG:
        memcpy(g_nvm, g_a.snap[mid(&g_a)], g_nvm_len);
        memcpy(g_nvm + off_image, c->kind == K_IMG_FOREIGN ? g_img_foreign : g_img_config, img_len);
        c->must_be_cold = 1;
        break;
    case K_SEAL_TORN: {
        /* a preparation (of this model, or still holding another's image) cut inside its seal:
         * the tag was cleared before it began, the seal written up to a strict prefix */
        fm_seal seal;
        /* the bytes power-on writes: up to the tag's end (not the structure's tail padding) */
        const uint32_t n = below((uint32_t)offsetof(fm_seal, tag) + 4u);
        memcpy(g_nvm, g_a.snap[mid(&g_a)], g_nvm_len);
        memcpy(&seal, &image->seal, sizeof seal);
        if (below(2)) memcpy(g_nvm + off_image, g_img_foreign, img_len);
        memset(&image->seal.tag, 0, sizeof image->seal.tag);
        memcpy(&image->seal, &seal, n);
        c->must_be_cold = 1;
        break;
    }
    case K_IMG_FLIP: {
        /* the image up to its seal's sum, and the state blocks the sum covers (the seal itself:
         * a field that differs fails the seal check) */
        const uint32_t main_used = image->main.state_used, head_used = image->has_exits ? image->head.state_used : 0u;
        const uint32_t flips = 1u + below(8);
        memcpy(g_nvm, g_a.snap[mid(&g_a)], g_nvm_len);
        for (i = 0; i < flips; i++) {
            const uint32_t where = below(3);
            uint8_t *p;
            uint32_t n;
            if (where == 0u) {
                p = g_nvm + off_image;
                n = (uint32_t)offsetof(fm_prepared, seal);
            } else if (where == 1u || head_used == 0u) {
                p = g_nvm + off_state;
                n = main_used;
            } else {
                p = g_nvm + off_head;
                n = head_used;
            }
            flip_bits(p, n, 1u);
        }
        c->verify = 1;
        c->must_be_cold = 1;
        break;
    }
    case K_IMG_RANDOM:
        memcpy(g_nvm, g_a.snap[mid(&g_a)], g_nvm_len);
        for (i = 0; i < (uint32_t)sizeof(fm_prepared); i++) g_nvm[off_image + i] = (uint8_t)rnd();
        c->must_be_cold = 1;
        break;
    case K_X_BODY_FLIP: {
        int slot;
        uint8_t *p;
        memcpy(g_nvm, g_a.snap[mid(&g_a)], g_nvm_len);
        slot = latest_slot(g_nvm);
        if (slot < 0) exit(2);
        p = g_nvm + (uint32_t)slot * g_rec;
        flip_bits(p + 4, g_rec - 8u, 1u + below(3));
        break;
    }
    case K_X_STALE_DEEP: {
        const uint32_t d = 2u + below(5);
        k = d + 1u + below(g_a.count - d - 1u);
        memcpy(g_nvm, g_a.snap[k], g_nvm_len);
        memcpy(g_nvm, g_a.snap[k - d], ckpt_region);
        break;
    }
    case K_X_OTHER_REC: {
        k = mid(&g_a);
        memcpy(g_nvm, g_a.snap[k], g_nvm_len);
        memcpy(g_nvm, g_b.snap[k < g_b.count - 1u ? k : g_b.count - 2u], ckpt_region);
        c->ref_b_ok = 1;
        break;
    }
    default:
        exit(2);
    }
    if (c->kind == K_IMG_CONFIG || below(8) == 0u) {
        /* sometimes the power-on itself runs with the other configuration (the image then
         * mismatches and is prepared afresh for it) */
        if (c->kind == K_IMG_CONFIG) c->cfg = &g_cfg;
        else if (c->kind != K_IMG_FLIP) {
            c->cfg = &g_cfg2;
            c->must_be_cold = 1;
        }
    }
}

static uint8_t same(const answer *x, const answer *y)
{
    return x->exit_index == y->exit_index && x->out_len == y->out_len && memcmp(x->out, y->out, x->out_len) == 0;
}

static uint32_t g_max_steps;

/* Power on the damaged NVM and resume to the end; the outcome. */
static int run_case(const case_info *c, int *status)
{
    fm_prepared *image = (fm_prepared *)(void *)(g_nvm + off_image);
    fm_intermittent r;
    uint8_t warm = 0, done = 0;
    int8_t logits[FM_CKPT_MAX_CLASSES];
    int16_t idx = 0;
    uint32_t steps = 0;
    answer got;
    fm_status s = fm_power_on(image, &g_io, &g_blocks, c->cfg, 0u, c->verify, &r, &warm);
    *status = 0;
    if (s == FM_OK) {
        policy(&r);
        if (warm && c->must_be_cold) return O_MISUSED;
        while (!done) {
            if (steps++ > g_max_steps) return O_HANG;
            s = fm_resume(&r, 1u, &done);
            if (s) break;
        }
    }
    if (s == FM_OK) s = fm_answer(&r, &idx, logits);
    if (s != FM_OK) {
        *status = (int)s;
        return O_REFUSED;
    }
    read_answer(&r, idx, logits, &got);
    if ((c->ref_a_ok && same(&got, &g_a.ref)) || (c->ref_b_ok && same(&got, &g_b.ref)))
        return warm ? O_WARM_OK : O_COLD_OK;
    return O_WRONG;
}

int main(int argc, char **argv)
{
    uint32_t cases, seed, len_in, n, i, st_a, ar_a, hs_a, st_b, ar_b, hs_b, state_len, arena_len, head_len;
    uint32_t counts[K_COUNT][O_COUNT], status_counts[6], x_status[6];
    uint8_t *inputs;
    int bad = 0;
    fm_prepared *image;
    if (argc < 6) {
        fprintf(stderr, "usage: fm_hostile MODEL OTHER_MODEL INPUTS CASES SEED [none|T|EXIT]\n");
        return 2;
    }
    g_model_a = read_all(argv[1], &g_len_a);
    g_model_b = read_all(argv[2], &g_len_b);
    inputs = read_all(argv[3], &len_in);
    cases = (uint32_t)strtoul(argv[4], NULL, 10);
    seed = (uint32_t)strtoul(argv[5], NULL, 10);
    if (argc > 6 && !strcmp(argv[6], "T")) g_thresholds = 1;
    else if (argc > 6 && strcmp(argv[6], "none") != 0) g_stop_at = (int16_t)atoi(argv[6]);
    if (!g_model_a || !g_model_b || !inputs || len_in < 2u || len_in % 2u) return 2;
    if (!probe(g_model_a, g_len_a, &st_a, &ar_a, &hs_a) || !probe(g_model_b, g_len_b, &st_b, &ar_b, &hs_b)) {
        fprintf(stderr, "model refused\n");
        return 2;
    }
    g_rng = seed;
    /* one layout for both models (the larger of each block), as one firmware's link would give */
    state_len = ALIGN16(st_a > st_b ? st_a : st_b);
    arena_len = ALIGN16(ar_a > ar_b ? ar_a : ar_b);
    head_len = ALIGN16(hs_a);
    ckpt_region = ALIGN16(fm_ckpt_bytes(FM_CKPT_MAX_CLASSES));
    off_arena = ckpt_region;
    off_image = off_arena + arena_len;
    off_state = off_image + ALIGN16((uint32_t)sizeof(fm_prepared));
    off_head = off_state + state_len;
    g_nvm_len = off_head + head_len + 16u;
    g_nvm = (uint8_t *)malloc(g_nvm_len);
    g_model = (uint8_t *)malloc(ALIGN16(g_len_a > g_len_b ? g_len_a : g_len_b));
    g_ram = (uint8_t *)malloc(HEAD_ARENA_BYTES);
    if (!g_nvm || !g_model || !g_ram) return 2;
    g_io.mem = g_nvm;
    g_io.len = g_nvm_len;
    g_io.write = nvm_write;
    g_io.ctx = NULL;
    g_io.in_order = 0;
    g_blocks.model = g_model;
    g_blocks.state = g_nvm + off_state;
    g_blocks.state_len = state_len;
    g_blocks.arena = g_nvm + off_arena;
    g_blocks.arena_len = arena_len;
    g_blocks.head_state = hs_a ? g_nvm + off_head : NULL;
    g_blocks.head_state_len = head_len;
    g_blocks.head_arena = g_ram;
    g_blocks.head_arena_len = HEAD_ARENA_BYTES;
    g_cfg.granularity = FM_GRANULARITY_ANY;      /* work mode, small steps: many commits */
    g_cfg.step_work = 256u;
    g_cfg.step_cost = 0u;
    g_cfg2.granularity = 3u;                     /* units mode */
    g_cfg2.step_work = 0u;
    g_cfg2.step_cost = 0u;
    flash(0);
    if (!reference_run(inputs, len_in / 2u, &g_a) || !reference_run(inputs + len_in / 2u, len_in / 2u, &g_b)) {
        fprintf(stderr, "the uninterrupted run failed\n");
        return 2;
    }
    if (g_a.count < 4u || g_b.count < 4u) {
        fprintf(stderr, "too few steps to damage (%u)\n", (unsigned)g_a.count);
        return 2;
    }
    image = (fm_prepared *)(void *)(g_nvm + off_image);
    g_rec = FM_CKPT_HEADER_BYTES + 4u * (image->has_exits ? image->exits.num_classes : 0u);
    /* every step runs at least one unit, or passes an exit point: a bound no resume exceeds */
    g_max_steps = 16u;
    for (i = 0; i < fm_num_ops(&image->main); i++) g_max_steps += fm_op_units(&image->main, i) + 1u;
    g_img_foreign = sealed_image(1, &g_cfg);
    g_img_config = sealed_image(0, &g_cfg2);
    if (!g_img_foreign || !g_img_config) {
        fprintf(stderr, "sealing the other images failed\n");
        return 2;
    }
    memset(counts, 0, sizeof counts);
    memset(status_counts, 0, sizeof status_counts);
    memset(x_status, 0, sizeof x_status);
    for (n = 0; n < cases; n++) {
        case_info c;
        int o, st;
        c.kind = (int)below(K_COUNT);
        damage(&c);
        o = run_case(&c, &st);
        counts[c.kind][o]++;
        if (o == O_REFUSED) {
            if (c.kind < K_IN_MODEL) status_counts[st]++;
            else x_status[st]++;
        }
        if (c.kind < K_IN_MODEL && (o == O_WRONG || o == O_HANG || o == O_MISUSED)) {
            if (bad < 10)
                fprintf(stderr, "case %u: %s ended %s\n", (unsigned)n, KIND[c.kind], OUTCOME[o]);
            bad++;
        }
    }
    /* the line: cases, kinds, outcomes (in-model), statuses, then the x_ kinds and outcomes */
    {
        uint32_t in_cases = 0, out_tot[O_COUNT] = {0}, x_tot[O_COUNT] = {0}, k, o;
        for (k = 0; k < K_COUNT; k++)
            for (o = 0; o < O_COUNT; o++) {
                if (k < K_IN_MODEL) {
                    out_tot[o] += counts[k][o];
                    in_cases += counts[k][o];
                } else {
                    x_tot[o] += counts[k][o];
                }
            }
        printf("cases=%u in_model=%u steps=%u exit_a=%d exit_b=%d", (unsigned)cases, (unsigned)in_cases,
               (unsigned)(g_a.count - 1u), (int)g_a.ref.exit_index, (int)g_b.ref.exit_index);
        for (k = 0; k < K_COUNT; k++) {
            uint32_t t = 0;
            for (o = 0; o < O_COUNT; o++) t += counts[k][o];
            printf(" %s=%u", KIND[k], (unsigned)t);
        }
        for (o = 0; o < O_COUNT; o++) printf(" %s=%u", OUTCOME[o], (unsigned)out_tot[o]);
        for (o = 1; o < 6; o++) printf(" refused_%s=%u", STATUS[o], (unsigned)status_counts[o]);
        for (o = 0; o < O_COUNT; o++) printf(" x_%s=%u", OUTCOME[o], (unsigned)x_tot[o]);
        for (k = 0; k < K_COUNT; k++)
            for (o = 0; o < O_COUNT; o++)
                printf(" %s.%s=%u", KIND[k], OUTCOME[o], (unsigned)counts[k][o]);
        printf("\n");
    }
    return bad ? 1 : 0;
}
