/* Static arena plan: every activation (and operator scratch) gets an offset such that buffers
 * whose lifetimes overlap never overlap in memory. Greedy by decreasing size, each at the lowest
 * offset that fits (the strategy of TFLite Micro's GreedyMemoryPlanner). Aliased tensors
 * (RESHAPE, EXPAND_DIMS, SQUEEZE, DENSIFY outputs) take no memory of their own. The planner
 * uses no memory besides the tensor and operator tables. */
#include "freeml/fm_internal.h"

#ifndef FM_ARENA_ALIGN
#define FM_ARENA_ALIGN 4u
#endif

typedef struct {
    uint32_t size;
    int32_t first, last;
    int32_t *offset;
} item;

/* Item i: tensors first, then operator scratch buffers; size 0 if it needs no arena. */
static item get(fm_interp *it, uint32_t i)
{
    item r;
    r.size = 0;
    r.first = r.last = 0;
    r.offset = NULL;
    if (i < it->num_tensors) {
        fm_tensor *t = &it->tensors[i];
        if (t->alias < 0 && !(t->flags & FM_T_CONST) && (t->flags & FM_T_USED)) {
            r.size = (t->bytes + FM_ARENA_ALIGN - 1u) & ~(FM_ARENA_ALIGN - 1u);
            r.first = t->first;
            r.last = t->last;
            r.offset = &t->offset;
        }
    } else {
        fm_op *op = &it->ops[i - it->num_tensors];
        if (op->scratch_bytes) {
            r.size = (op->scratch_bytes + FM_ARENA_ALIGN - 1u) & ~(FM_ARENA_ALIGN - 1u);
            r.first = r.last = (int32_t)(op - it->ops);
            r.offset = &op->scratch_off;
        }
    }
    return r;
}

fm_status fm_plan(fm_interp *it)
{
    uint32_t n = (uint32_t)it->num_tensors + it->num_ops, i, j, placed;
    uint32_t end = 0;
    /* Merge the lifetimes of aliases into their root tensor. */
    for (i = 0; i < it->num_tensors; i++) {
        fm_tensor *t = &it->tensors[i];
        fm_tensor *r;
        if (t->alias < 0 || !(t->flags & FM_T_USED)) continue;
        r = (fm_tensor *)(uintptr_t)fm_root(it, (int16_t)i);
        if (r->first < 0 || t->first < r->first) r->first = t->first;
        if (t->last > r->last) r->last = t->last;
        r->flags |= FM_T_USED;
    }
    for (i = 0; i < n; i++) {
        item a = get(it, i);
        if (a.offset) *a.offset = -1;
    }
    for (placed = 0; placed < n; placed++) {
        /* next: the largest unplaced item (lowest index on ties) */
        uint32_t best = n, off;
        item b;
        int moved;
        for (i = 0; i < n; i++) {
            item a = get(it, i);
            if (a.size && *a.offset < 0 && (best == n || a.size > get(it, best).size)) best = i;
        }
        if (best == n) break;
        b = get(it, best);
        off = 0;
        do {
            moved = 0;
            for (j = 0; j < n; j++) {
                item a = get(it, j);
                if (!a.size || *a.offset < 0) continue;
                if (a.last < b.first || a.first > b.last) continue;    /* lifetimes disjoint */
                if ((uint32_t)*a.offset >= off + b.size || (uint32_t)*a.offset + a.size <= off) continue;
                off = (uint32_t)*a.offset + a.size;
                moved = 1;
            }
        } while (moved);
        *b.offset = (int32_t)off;
        if (off + b.size > end) end = off + b.size;
    }
    it->arena_needed = end;
    return FM_OK;
}
