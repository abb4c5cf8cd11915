/* Warm restart (fm_persist.h): the prepared image in NVM, its seal and the power-on check. */
#include "freeml/fm_persist.h"

#include <string.h>

#include "freeml/fm_internal.h"

/* The build a seal was made by: version, the sizes of what the image holds and the build's
 * switches (a firmware whose structures or code paths differ cannot read the image). */
#define SEAL_BUILD ((FM_PERSIST_VERSION << 28) ^ ((uint32_t)sizeof(fm_prepared) << 12) ^ \
                    ((uint32_t)sizeof(fm_op) << 4) ^ ((uint32_t)sizeof(fm_tensor) << 20) ^ \
                    ((uint32_t)FM_EXITS << 1) ^ (uint32_t)FM_PREPARE_FLOAT)

uint32_t fm_model_fingerprint(const uint8_t *model, uint32_t model_len)
{
    /* FNV-1a over the length and 16 words sampled at fixed fractions of the model: for a model
     * converted without freeml_prepare (no model id). About 250 MSP430 cycles. */
    uint32_t h = 2166136261u ^ model_len, step = (model_len / 16u) & ~3u, at = 0;
    uint8_t i;
    if (model_len < 4u) return h;
    for (i = 0; i < 16u; i++, at += step) {
        h = (h ^ fm_ld_u32(model + (at + 4u <= model_len ? at : model_len - 4u))) * 16777619u;
    }
    return h;
}

/* Fletcher-32 of the 16-bit words of [p, p + n) (n rounded down to even), continuing s: both
 * sums modulo 65535 (an end-around carry after each add; one more instruction per add than
 * modulo 65536). Modulo 65536, two flips of the same bit in words an even distance apart
 * cancel (bit 15: in a and in b), and 1-8 seeded bit flips in the image went undetected in 2
 * of 7,609 cases (tools/fm_hostile.c), 0 of 15,151 modulo 65535, where they cancel only 65535
 * words apart.
 * Native loads (p is 2-aligned: the image and the state blocks are), the byte order of the
 * machine: the sum is compared on the machine that made it. */
static uint32_t sum16(uint32_t s, const uint8_t *p, uint32_t n)
{
    const uint16_t *w = (const uint16_t *)(const void *)p;
    uint16_t a = (uint16_t)s, b = (uint16_t)(s >> 16);
    uint32_t i;
    for (i = 0; i < n / 2u; i++) {
        a = (uint16_t)(a + w[i]);
        if (a < w[i]) a++;              /* carry out of 16 bits: 65536 = 1 (mod 65535) */
        b = (uint16_t)(b + a);
        if (b < a) b++;
    }
    return ((uint32_t)b << 16) | a;
}

static uint32_t image_sum(const fm_prepared *p)
{
    uint32_t s = sum16(0u, (const uint8_t *)p, (uint32_t)offsetof(fm_prepared, seal));
    s = sum16(s, p->main.state, p->main.state_used);
    if (p->has_exits) s = sum16(s, p->head.state, p->head.state_used);
    return s;
}

#if FM_PREPARE_ON_DEVICE
/* The seal fm_power_on would write now, except model id and sum (they need the image). */
static void expected_seal(fm_seal *e, const fm_blocks *b, const fm_step_config *cfg)
{
    memset(e, 0, sizeof *e);
    e->build = SEAL_BUILD;
    e->model_len = b->model_len;
    e->lens[0] = b->state_len;
    e->lens[1] = b->arena_len;
    e->lens[2] = b->head_state ? b->head_state_len : 0u;
    e->lens[3] = b->head_state ? b->head_arena_len : 0u;
    e->granularity = cfg->granularity;
    e->step_work = cfg->step_work;
    e->step_cost = cfg->step_cost;
    e->kernels = (uintptr_t)fm_kernels;
    e->model = (uintptr_t)b->model;
    e->blocks[0] = (uintptr_t)b->state;
    e->blocks[1] = (uintptr_t)b->arena;
    e->blocks[2] = b->head_state ? (uintptr_t)b->head_state : 0u;
    e->blocks[3] = b->head_state ? (uintptr_t)b->head_arena : 0u;
    e->tag = FM_SEAL_TAG;
}
#endif

/* The model id the image would have: the freeml_prepare id at the seal's position when the
 * model has it there, else the fingerprint. */
static uint32_t model_id_at(const fm_blocks *b, uint32_t pos)
{
    if (pos != 0u && pos <= b->model_len - 4u && b->model_len >= 4u) return fm_ld_u32(b->model + pos);
    return fm_model_fingerprint(b->model, b->model_len);
}

/* Field by field, stopping at the first difference: about 20 comparisons on a power-on (a
 * byte-wise memcmp of the whole seal cost the MSP430 about 700 cycles). */
static uint8_t seal_matches(const fm_seal *s, const fm_blocks *b, const fm_step_config *cfg)
{
    return s->build == SEAL_BUILD && s->model == (uintptr_t)b->model && s->model_len == b->model_len &&
#if FM_PREPARE_ON_DEVICE
           s->kernels == (uintptr_t)fm_kernels &&
#endif
           s->blocks[0] == (uintptr_t)b->state &&
           s->blocks[1] == (uintptr_t)b->arena && s->lens[0] == b->state_len && s->lens[1] == b->arena_len &&
           s->blocks[2] == (b->head_state ? (uintptr_t)b->head_state : 0u) &&
           s->blocks[3] == (b->head_state ? (uintptr_t)b->head_arena : 0u) &&
           s->lens[2] == (b->head_state ? b->head_state_len : 0u) &&
           s->lens[3] == (b->head_state ? b->head_arena_len : 0u) &&
           s->granularity == cfg->granularity && s->step_work == cfg->step_work &&
           s->step_cost == cfg->step_cost && s->model_id == model_id_at(b, s->model_id_pos);
}

static uint8_t warm_ok(const fm_prepared *p, const fm_blocks *b, const fm_step_config *cfg, uint8_t verify)
{
    if (p->seal.tag != FM_SEAL_TAG || !seal_matches(&p->seal, b, cfg)) return 0;   /* torn, or not ours */
    /* the interpreters point where the blocks are (a cheap check against a damaged image) */
    if (p->main.model != b->model || p->main.state != b->state || p->main.arena != b->arena ||
        !p->main.ready || p->main.state_used > b->state_len || p->has_exits > 1u ||
        (p->has_exits && (!b->head_state || p->head.state != b->head_state || !p->head.ready ||
                          p->head.state_used > b->head_state_len)))
        return 0;
    return !verify || (p->seal.sum != 0u && image_sum(p) == p->seal.sum);
}

#if FM_PREPARE_ON_DEVICE
static void nvm_store(fm_nvm *nvm, const void *at, const void *src, uint32_t n)
{
    nvm->write(nvm, (uint32_t)((const uint8_t *)at - nvm->mem), (const uint8_t *)src, n);
}

static fm_status prepare_image(fm_prepared *p, const fm_blocks *b, fm_intermittent *r)
{
    fm_status s = fm_init(&p->main, b->model, b->model_len, b->state, b->state_len, b->arena, b->arena_len);
    uint16_t head_sg;
    if (s) return s;
    p->has_exits = 0;
#if FM_EXITS
    if (b->head_state && fm_exit_find(b->model, b->model_len, &head_sg) == FM_OK) {
        s = fm_init_subgraph(&p->head, b->model, b->model_len, head_sg, b->head_state, b->head_state_len,
                             b->head_arena, b->head_arena_len);
        if (s == FM_OK) s = fm_exit_init(&p->exits, &p->main, &p->head);
        if (s) {
            p->main.err = p->head.err;                    /* the error the caller will read */
            return s;
        }
        p->has_exits = 1;
    }
#else
    (void)head_sg;
#endif
    r->it = &p->main;
    r->planned = 0;
    return fm_plan_ops(r);
}
#endif

fm_status fm_power_on(fm_prepared *p, fm_nvm *nvm, const fm_blocks *b, const fm_step_config *cfg,
                      uint32_t ckpt_offset, uint8_t verify, fm_intermittent *r, uint8_t *warm)
{
    *warm = 0;
    if (!p || !nvm || !b || !cfg || !r || !b->model || (const uint8_t *)p < nvm->mem ||
        (uint32_t)((const uint8_t *)p - nvm->mem) > nvm->len - (uint32_t)sizeof *p || nvm->len < sizeof *p)
        return FM_ERR_ARG;
    /* every field but the checkpoint record st, which fm_resume / fm_start read from NVM
     * (st_committed 0), at every power-on */
    r->it = NULL;
    r->nvm = nvm;
    r->ckpt_offset = ckpt_offset;
    r->granularity = cfg->granularity;
    r->step_work = cfg->step_work;
    r->step_cost = cfg->step_cost;
    r->st.num_classes = 0u;         /* the rest of st: read from NVM by fm_resume and fm_start */
    r->st_committed = 0u;
    r->units_run = 0u;
    r->commits = 0u;
    r->exits = NULL;
    r->head = NULL;
    r->energy = NULL;
    r->energy_ctx = NULL;
    r->energy_per_mac = 0u;
    r->energy_per_cycle = 0u;
    r->stop_at_exit = -1;
    r->use_thresholds = 0u;
    r->planned = 0u;
    if (warm_ok(p, b, cfg, verify)) {
        *warm = 1;
    } else {
#if !FM_PREPARE_ON_DEVICE
        return FM_ERR_UNSUPPORTED;                       /* no image to run: nothing written */
#else
        fm_seal e;
        fm_status s;
        if (p->seal.tag != 0u) {                         /* invalid from here until sealed */
            const uint32_t zero = 0u;
            nvm_store(nvm, &p->seal.tag, &zero, 4u);
        }
        s = prepare_image(p, b, r);
        if (s) return s;
        expected_seal(&e, b, cfg);
        e.model_id_pos = p->main.model_id_pos;
        e.model_id = model_id_at(b, e.model_id_pos);
        e.sum = verify ? image_sum(p) : 0u;       /* 0: sealed without a sum */
        if (nvm->in_order) {
            nvm_store(nvm, &p->seal, &e, (uint32_t)sizeof e);   /* tag last in address order */
        } else {
            nvm_store(nvm, &p->seal, &e, (uint32_t)offsetof(fm_seal, tag));
            nvm_store(nvm, &p->seal.tag, &e.tag, 4u);
        }
#endif
    }
    r->it = &p->main;
    r->planned = 1;
#if FM_EXITS
    if (p->has_exits) {
        r->exits = &p->exits;
        r->head = &p->head;
        r->st.num_classes = p->exits.num_classes;
    }
#endif
    return FM_OK;
}
