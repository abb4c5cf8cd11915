/* Static arena plan: every activation (and operator scratch) gets an offset such that buffers
 * whose lifetimes overlap never overlap in memory. Greedy by decreasing size, each at the lowest
 * offset that fits (the strategy of TFLite Micro's GreedyMemoryPlanner). Aliased tensors
 * (RESHAPE, EXPAND_DIMS, SQUEEZE, DENSIFY outputs) take no memory of their own. The planner
 * uses no memory besides the tensor and operator tables. */
#include "freeml/fm_internal.h"

#ifndef FM_ARENA_ALIGN
#define FM_ARENA_ALIGN 4u
#endif

/* Arena bytes of a tensor's activation (0: constant, alias, or not used). */
static uint32_t tensor_size(const fm_tensor *t)
{
    uint32_t n = t->bytes;
    if (t->alias >= 0 || (t->flags & FM_T_CONST) || !(t->flags & FM_T_USED)) return 0u;
    if (t->flags & (FM_T_RESOURCE | FM_T_VARIABLE))   /* state: its value, then its initialized word */
        n = n ? FM_ALIGN4(n) + 4u : 0u;
    return (n + FM_ARENA_ALIGN - 1u) & ~(FM_ARENA_ALIGN - 1u);
}

static uint32_t scratch_size(const fm_op *op)
{
    return (op->scratch_bytes + FM_ARENA_ALIGN - 1u) & ~(FM_ARENA_ALIGN - 1u);
}

/* The buffers are walked in index order, tensors with a pointer, operator scratch through the
 * operators' pointer table (FM_OP): indexing the tensors (a multiplication by the structure's
 * size per access, a helper call on the MSP430) cost the planner about 3x on the MSP430, where it
 * was 30% of a cold preparation. */
fm_status fm_plan(fm_interp *it)
{
    const uint16_t nt = it->num_tensors, no = it->num_ops;
    fm_tensor *const tensors = it->tensors;
    fm_tensor *t;
    fm_op *op, *const *opp;
    uint16_t i;
    uint32_t end = 0;
    /* Merge the lifetimes of aliases into their root tensor. */
    for (i = 0, t = tensors; i < nt; i++, t++) {
        fm_tensor *r;
        if (t->alias < 0 || !(t->flags & FM_T_USED)) continue;
        r = (fm_tensor *)(uintptr_t)fm_root(it, (int16_t)i);
        if (r->first < 0 || t->first < r->first) r->first = t->first;
        if (t->last > r->last) r->last = t->last;
        r->flags |= FM_T_USED;
    }
    for (i = 0, t = tensors; i < nt; i++, t++) {
        if (tensor_size(t)) t->offset = -1;
        if ((t->flags & (FM_T_RESOURCE | FM_T_VARIABLE)) && t->alias < 0) {   /* state outlives every inference */
            t->first = 0;
            t->last = (int16_t)no;
        }
    }
    for (i = 0, opp = it->op_at; i < no; i++, opp++)
        if ((*opp)->scratch_bytes) (*opp)->scratch_off = -1;
    for (;;) {
        /* next: the largest unplaced buffer (lowest index on ties: tensors, then scratch) */
        int32_t *best = NULL, first = 0, last = 0;
        uint32_t size = 0, off = 0;
        int moved;
        for (i = 0, t = tensors; i < nt; i++, t++) {
            const uint32_t sz = tensor_size(t);
            if (sz > size && t->offset < 0) {
                size = sz;
                best = &t->offset;
                first = t->first;
                last = t->last;
            }
        }
        for (i = 0, opp = it->op_at; i < no; i++, opp++) {
            const uint32_t sz = (op = *opp)->scratch_bytes ? scratch_size(op) : 0u;
            if (sz > size && op->scratch_off < 0) {
                size = sz;
                best = &op->scratch_off;
                first = last = (int32_t)i;
            }
        }
        if (!best) break;
        /* the lowest offset clear of every placed buffer whose lifetime overlaps */
        do {
            moved = 0;
            for (i = 0, t = tensors; i < nt; i++, t++) {
                const uint32_t sz = tensor_size(t);
                if (!sz || t->offset < 0) continue;
                if (t->last < first || t->first > last) continue;       /* lifetimes disjoint */
                if ((uint32_t)t->offset >= off + size || (uint32_t)t->offset + sz <= off) continue;
                off = (uint32_t)t->offset + sz;
                moved = 1;
            }
            for (i = 0, opp = it->op_at; i < no; i++, opp++) {
                const uint32_t sz = (op = *opp)->scratch_bytes ? scratch_size(op) : 0u;
                if (!sz || op->scratch_off < 0) continue;
                if ((int32_t)i < first || (int32_t)i > last) continue;
                if ((uint32_t)op->scratch_off >= off + size || (uint32_t)op->scratch_off + sz <= off) continue;
                off = (uint32_t)op->scratch_off + sz;
                moved = 1;
            }
        } while (moved);
        *best = (int32_t)off;
        if (off + size > end) end = off + size;
    }
    it->arena_needed = end;
    return FM_OK;
}
