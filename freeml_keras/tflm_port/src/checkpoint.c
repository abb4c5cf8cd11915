/* Double-buffered checkpoint records in NVM and the intermittent step loop (fm_checkpoint.h). */
#include "freeml/fm_checkpoint.h"

#include <string.h>

#include "freeml/fm_internal.h"

/* A build with FM_EXITS 0 (fm_internal.h) has no anytime exit: none of the fm_exit_* calls below
 * is compiled, and an fm_intermittent with exits set is refused (FM_ERR_UNSUPPORTED) rather than
 * run as if it had none. */
static fm_status exits_supported(const fm_intermittent *r)
{
#if FM_EXITS
    (void)r;
    return FM_OK;
#else
    return r->exits != NULL ? FM_ERR_UNSUPPORTED : FM_OK;
#endif
}

/* Little-endian stores of the record's fields (commits, every step). On a little-endian core
 * (all three platforms) a memcpy, which the compilers inline: byte shifts of 32-bit values cost
 * a helper call per shift on the 16-bit MSP430. Loads (after a power-on only) use the reader's
 * fm_ld_u32: a call instead of inlined byte loads, smaller on the MSP430. */
static uint8_t little_endian(void)
{
    const uint16_t one = 1u;
    return *(const uint8_t *)&one == 1u;
}

static void put32(uint8_t *p, uint32_t v)
{
    if (little_endian()) {
        memcpy(p, &v, 4);
        return;
    }
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t record_bytes(uint16_t num_classes)
{
    return FM_CKPT_HEADER_BYTES + 4u * (uint32_t)num_classes;
}

uint32_t fm_ckpt_bytes(uint16_t num_classes)
{
    return 2u * record_bytes(num_classes);
}

/* Classes of the accumulator of a record: none in a build without exits (check_slots refuses
 * num_classes > 0 there), so that the accumulator code is not compiled. */
#if FM_EXITS
#define ACC_CLASSES(n) (n)
#else
#define ACC_CLASSES(n) 0u
#endif

/* The two slots for num_classes classes lie inside the NVM region at offset. */
static fm_status check_slots(const fm_nvm *nvm, uint32_t offset, uint16_t num_classes)
{
#if !FM_EXITS
    if (num_classes != 0u) return FM_ERR_UNSUPPORTED;    /* an accumulator needs the exit head */
#endif
    if (num_classes > FM_CKPT_MAX_CLASSES || offset > nvm->len || nvm->len - offset < fm_ckpt_bytes(num_classes))
        return FM_ERR_ARG;
    return FM_OK;
}

/* A record's body (operator, flags, unit, accumulator: between the sequence word and the tag)
 * summed over 16-bit words, Fletcher style (a sum and a sum of sums, the second byte-swapped
 * into the first): kept in the high half of the sequence word, so that a body changed after
 * its commit (a bit flip in NVM) is not taken for progress. About 5 instructions per word; a
 * restart sums one record. */
static uint16_t body_sum(const uint8_t *rec, uint16_t num_classes)
{
    /* 16-bit counters: the body is at most 8 + 4 * FM_CKPT_MAX_CLASSES bytes */
    const uint16_t n = (uint16_t)((FM_CKPT_ACC_OFFSET - 4u) / 2u + 2u * num_classes);
    const uint8_t *p = rec + 4u;
    uint16_t a = 0x5EA1u, b = 0u, i;
    if (((uintptr_t)p & 1u) == 0u) {
        const uint16_t *w = (const uint16_t *)(const void *)p;
        for (i = 0; i < n; i++) {
            a = (uint16_t)(a + w[i]);
            b = (uint16_t)(b + a);
        }
    } else {
        for (i = 0; i < n; i++) {
            a = (uint16_t)(a + fm_ld_u16(p + 2u * i));
            b = (uint16_t)(b + a);
        }
    }
    return (uint16_t)(a ^ (uint16_t)((uint16_t)(b << 8) | (uint16_t)(b >> 8)));
}

/* A record is complete when its tag (last 4 bytes) is the complement of its sequence word; it
 * is intact when its body still has the sum the sequence word carries (high 16 bits). */
static uint8_t complete(const uint8_t *rec, uint16_t num_classes)
{
    const uint8_t *tag = rec + FM_CKPT_ACC_OFFSET + 4u * (uint32_t)num_classes;
    if ((((uintptr_t)rec) & 1u) == 0u) {    /* word loads (the restart path reads two records) */
        const uint16_t *s = (const uint16_t *)(const void *)rec, *t = (const uint16_t *)(const void *)tag;
        return (uint16_t)(s[0] ^ t[0]) == 0xFFFFu && (uint16_t)(s[1] ^ t[1]) == 0xFFFFu;
    }
    return fm_ld_u32(tag) == ~fm_ld_u32(rec);
}

static uint8_t intact(const uint8_t *rec, uint16_t num_classes)
{
    return fm_ld_u16(rec + 2u) == body_sum(rec, num_classes);   /* the first word's high half */
}

static void decode(const uint8_t *rec, uint16_t num_classes, fm_ckpt *out)
{
#if FM_EXITS
    uint16_t c;
#else
    (void)num_classes;
#endif
    out->seq = fm_ld_u32(rec) & 0xFFFFu;
    out->op = (uint16_t)(rec[4] | (rec[5] << 8));
    out->flags = (uint16_t)(rec[6] | (rec[7] << 8));
    out->unit = fm_ld_u32(rec + 8);
#if FM_EXITS
    if (num_classes == 0u) {
        /* no exit head: no accumulator */
    } else if (little_endian()) {
        memcpy(out->acc, rec + FM_CKPT_ACC_OFFSET, 4u * (uint32_t)num_classes);
    } else {
        for (c = 0; c < num_classes; c++) out->acc[c] = (int32_t)fm_ld_u32(rec + FM_CKPT_ACC_OFFSET + 4u * c);
    }
#endif
}

/* Newer of two sequence numbers (the low 16 bits of the sequence words), with wrap-around. */
static uint8_t newer(uint32_t a, uint32_t b)
{
    return (int16_t)(uint16_t)((uint16_t)a - (uint16_t)b) > 0;
}

fm_status fm_ckpt_load(const fm_nvm *nvm, uint32_t offset, uint16_t num_classes, fm_ckpt *out,
                       uint8_t *found)
{
    const uint8_t *a, *b;
    uint8_t va, vb;
    fm_status s = check_slots(nvm, offset, num_classes);
    *found = 0;
    if (s) return s;
    num_classes = ACC_CLASSES(num_classes);
    a = nvm->mem + offset;
    b = a + record_bytes(num_classes);
    va = complete(a, num_classes);
    vb = complete(b, num_classes);
    /* the header and the classes in use (the whole accumulator is 256 bytes: a power-on reads
     * this before its first unit of work) */
    out->seq = 0u;
    out->op = 0u;
    out->flags = 0u;
    out->unit = 0u;
    out->num_classes = num_classes;
    if (num_classes) memset(out->acc, 0, 4u * (uint32_t)num_classes);
    if (va && vb && newer(fm_ld_u32(b), fm_ld_u32(a))) {    /* try the newer one first */
        const uint8_t *t = a;
        a = b;
        b = t;
    } else if (!va) {
        const uint8_t *t = a;
        a = b;
        b = t;
        va = vb;
        vb = 0;
    }
    /* the newest complete record whose body is intact (a changed one is never progress; the
     * older record then resumes one step earlier, which re-runs that step) */
    if (va && intact(a, num_classes)) {
        decode(a, num_classes, out);
        *found = 1;
    } else if (vb && intact(b, num_classes)) {
        decode(b, num_classes, out);
        *found = 1;
    }
    return FM_OK;
}

/* Why three writes make a commit atomic without a checksum. The slot written (the parity of
 * the new sequence number s) holds either nothing valid or the record s - 2; the other slot
 * holds the latest valid record s - 1 and is not touched. fm_nvm's write calls are not
 * reordered; bytes inside one call may be stored in any order and a failure can stop a call
 * anywhere. (1) The new sequence number: if it stops inside, the word is a byte mix of s - 2
 * and s, which still matches the old tag ~(s - 2) only if no byte that differs has been stored
 * yet, and then the slot is byte for byte the old record. After (1) completes the slot is
 * invalid (s against the tag ~(s - 2)) throughout (2), the operator, flags, unit and
 * accumulator. (3) The tag ~s: a byte mix of ~(s - 2) and ~s equals ~s only once every byte that
 * differs is stored, that is when the record is complete. So a failure anywhere leaves the
 * previous latest record as the newest valid one, or the new record complete: never a mix, by
 * construction rather than with the 2^-32 miss rate of a CRC-32 or Fletcher-32 over a torn
 * record. A checksum would add work to every commit and load (a nibble-table CRC-32 of the
 * 12-byte header cost about 120 of the 175 Cortex-M4 instructions of a commit) for what the
 * write order already guarantees; like a checksum, the tag leaves a 2^-32 chance that never
 * written, random NVM reads as valid. When the platform's writes store bytes in address order
 * (fm_nvm.in_order) one write of the whole record does the same: a failure leaves a prefix, and
 * the sequence number is its first word and the tag its last. Accumulator bytes the slot already
 * holds need no write: they are what (2) would store. */
fm_status fm_ckpt_commit(fm_nvm *nvm, uint32_t offset, fm_ckpt *st)
{
    uint8_t rec[FM_CKPT_HEADER_BYTES + 4u * FM_CKPT_MAX_CLASSES];
    uint32_t n, at, acc_bytes;
    uint16_t c, num_classes = st->num_classes;
    uint8_t same_acc;
    fm_status s = check_slots(nvm, offset, num_classes);
    if (s) return s;
    num_classes = ACC_CLASSES(num_classes);
    n = record_bytes(num_classes);
    st->seq++;
    put32(rec, st->seq);
    rec[4] = (uint8_t)st->op;
    rec[5] = (uint8_t)(st->op >> 8);
    rec[6] = (uint8_t)st->flags;
    rec[7] = (uint8_t)(st->flags >> 8);
    put32(rec + 8, st->unit);
    if (num_classes == 0u) {
        /* no exit head: no accumulator */
    } else if (little_endian()) {
        memcpy(rec + FM_CKPT_ACC_OFFSET, st->acc, 4u * (uint32_t)num_classes);
    } else {
        for (c = 0; c < num_classes; c++) put32(rec + FM_CKPT_ACC_OFFSET + 4u * c, (uint32_t)st->acc[c]);
    }
    put32(rec, ((uint32_t)body_sum(rec, num_classes) << 16) | (st->seq & 0xFFFFu));
    put32(rec + n - 4u, ~fm_ld_u32(rec));
    at = offset + (st->seq & 1u) * n;
    /* The accumulator changes only at exit points: when the slot already holds these bytes (it
     * did two commits ago), they count as written and are not written again. */
    acc_bytes = 4u * (uint32_t)num_classes;
    same_acc = acc_bytes == 0u ||
               memcmp(nvm->mem + at + FM_CKPT_ACC_OFFSET, rec + FM_CKPT_ACC_OFFSET, acc_bytes) == 0;
    if (nvm->in_order && (!same_acc || acc_bytes == 0u)) {   /* (1), (2), (3) in address order */
        nvm->write(nvm, at, rec, n);
        return FM_OK;
    }
    if (nvm->in_order) {
        nvm->write(nvm, at, rec, FM_CKPT_ACC_OFFSET);        /* (1) and (2) in address order */
    } else {
        nvm->write(nvm, at, rec, 4u);                        /* (1) sequence number */
        nvm->write(nvm, at + 4u, rec + 4u, FM_CKPT_ACC_OFFSET - 4u);  /* (2) operator, flags, unit */
        if (!same_acc) nvm->write(nvm, at + FM_CKPT_ACC_OFFSET, rec + FM_CKPT_ACC_OFFSET, acc_bytes);
    }
    nvm->write(nvm, at + n - 4u, rec + n - 4u, 4u);          /* (3) tag: the record is complete */
    return FM_OK;
}

/* ---- atomic steps ------------------------------------------------------------------------- */

/* Work of a whole operator in MAC-equivalents: MACs for CONV_2D, DEPTHWISE_CONV_2D,
 * FULLY_CONNECTED and the LSTM, window reads for pooling, one per output byte for everything
 * else. */
static uint32_t op_work(const fm_interp *it, const fm_op *op)
{
    /* (ASSIGN_VARIABLE and CALL_ONCE have no output: their units) */
    uint32_t out = op->out >= 0 ? fm_root(it, op->out)->bytes : op->units, inner = 1u;
    switch (op->code) {
    case FM_OP_CONV_2D:
        inner = (uint32_t)op->p.conv.k_h * (uint32_t)op->p.conv.k_w * (uint32_t)op->p.conv.k_c;
        break;
    case FM_OP_DEPTHWISE_CONV_2D:
        inner = (uint32_t)op->p.conv.k_h * (uint32_t)op->p.conv.k_w;
        break;
    case FM_OP_FULLY_CONNECTED:
        inner = (uint32_t)op->p.fc.depth;
        break;
    case FM_OP_MAX_POOL_2D:
    case FM_OP_AVERAGE_POOL_2D:
        inner = (uint32_t)op->p.pool.f_h * (uint32_t)op->p.pool.f_w;
        break;
    case FM_OP_TRANSPOSE_CONV:                      /* (at most: strides skip taps) */
        inner = (uint32_t)op->p.conv.k_h * (uint32_t)op->p.conv.k_w * (uint32_t)op->p.conv.k_c;
        break;
#if FM_LSTM
    case FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM:        /* four gates of two products per element */
        inner = 4u * (uint32_t)(op->p.lstm.input + op->p.lstm.state);
        break;
#endif
    default:
        break;
    }
    return out * (inner ? inner : 1u);
}

/* Work of one of `units` units of an operator of work w (rounded up, at least 1). */
static uint32_t unit_work(uint32_t w, uint32_t units)
{
    uint32_t per = w / units;
    return per * units < w || per == 0u ? per + 1u : per;
}

static uint8_t is_exit_op(const fm_intermittent *r, uint16_t op)
{
#if FM_EXITS
    return r->exits != NULL && fm_exit_at_op(r->exits, op) >= 0;
#else
    (void)r;
    (void)op;
    return 0;
#endif
}

/* Per-operator costs of the model's v2 freeml metadata (operator records: u32 cost at byte 16 of
 * 20), or NULL (and 0 records) when it has none. */
static const uint8_t *metadata_costs(const fm_interp *it, uint32_t *num_ops)
{
    uint32_t n, stride;
    const uint8_t *md = fm_freeml_metadata(it->model, it->model_len, &n, &stride);
    *num_ops = 0;
    if (md == NULL || stride != FM_MD_OP_RECORD_V2 || fm_ld_u16(md + 14) != it->num_ops) return NULL;
    *num_ops = it->num_ops;
    return md + fm_ld_u32(md + 20);
}

fm_status fm_plan_ops(fm_intermittent *r)
{
    fm_interp *it = r->it;
    uint32_t n_costs, i;
    const uint8_t *costs = r->step_cost > 0u ? metadata_costs(it, &n_costs) : NULL;
    uint8_t by_cost = costs != NULL;
    if (r->granularity == 0u) return FM_ERR_ARG;
    for (i = 0; costs && i < it->num_ops; i++) {      /* cost mode needs every working op priced */
        const uint32_t c = fm_ld_u32(costs + 20u * i + 16u);
        fm_op *o = FM_OP(it, i);
        o->unit_cost = o->units && c ? unit_work(c, o->units) : 0u;
        if (c == 0u && o->units > 0u) by_cost = 0;
    }
    for (i = 0; i < it->num_ops; i++) {
        fm_op *o = FM_OP(it, i);
        uint32_t n = o->units, whole, per, budget;
        if (!by_cost) o->unit_cost = 0u;             /* an incomplete table prices nothing */
        if (by_cost) {
            whole = fm_ld_u32(costs + 20u * i + 16u);
            per = o->unit_cost;
            budget = r->step_cost;
        } else if (r->step_work > 0u) {
            whole = op_work(it, o);
            per = o->units ? unit_work(whole, o->units) : 1u;
            budget = r->step_work;
        } else {
            whole = per = budget = 0u;                  /* units mode: granularity alone */
        }
        if (budget > 0u && !(whole <= budget)) {
            n = per ? budget / per : n;
            if (n == 0u) n = 1u;                        /* a step runs at least one unit */
        }
        if (n > r->granularity) n = r->granularity;
        /* SVDF: a step never holds a unit that reads a state row and the one that rewrites it */
        if (o->code == FM_OP_SVDF && n > (uint32_t)(o->p.svdf.batch * o->p.svdf.filters))
            n = (uint32_t)(o->p.svdf.batch * o->p.svdf.filters);
        o->step_units = n;
    }
    r->planned = 1;
    return FM_OK;
}

/* The atomic step that starts at `start`: how many units of its operator it runs (fm_step runs
 * them from `start`, passing alias operators before and after; at most the operator's planned
 * step_units) and, when asked, its work and cost. A step never crosses into a second operator
 * with units. That would be idempotent only where the arena plan keeps the step's inputs apart
 * from the later operators' outputs, which the planner's buffer reuse rarely allows (one
 * FULLY_CONNECTED + SOFTMAX pair per reference model), and checking the plan at every step cost
 * about as much as the commit it saved: Cortex-M4, MLP 64-16-10, 6.9% overhead with that pair
 * joined against 6.7% without (a version that joined, measured before it was taken out). The
 * restart path reaches its first unit through here: no division, no metadata read. */
static uint32_t plan_step(const fm_intermittent *r, fm_cursor start, uint32_t *work, uint32_t *cost)
{
    const fm_interp *it = r->it;
    const fm_op *o = NULL;
    uint16_t op = start.op;
    uint32_t unit = start.unit, n;
    for (; op < it->num_ops; op++, unit = 0) {        /* alias operators: no units, no step */
        o = FM_OP(it, op);
        if (unit < o->units) break;
        if (is_exit_op(r, op)) return 0;              /* a step to accumulate it */
    }
    if (op == it->num_ops || o == NULL) return 0;
    n = o->units - unit;
    if (n > o->step_units) n = o->step_units;
#if FM_LSTM
    if (o->code == FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM) {
        /* a step ends before each copy unit (the last of every sequential step, kernels/lstm.c):
         * never with the element units that read the states the copy rewrites */
        const uint32_t per = (uint32_t)(o->p.lstm.rows * o->p.lstm.state) + 1u, e = unit % per;
        if (e + 1u < per && n > per - 1u - e) n = per - 1u - e;
    }
#endif
    if (work) {
        const uint32_t w = op_work(it, o);
        *work = unit == 0u && n == o->units ? w : unit_work(w, o->units) * n;
    }
    if (cost) *cost = o->unit_cost * n;
    return n;
}

static fm_status commit_fresh(fm_intermittent *r, uint16_t flags)
{
    fm_ckpt prev;
    uint8_t found;
    fm_status s;
    if (r->granularity == 0u) return FM_ERR_ARG;
    s = exits_supported(r);
    if (s) return s;
    if (!r->st_committed) {          /* r->st.seq is not known to be the latest: read it */
        s = fm_ckpt_load(r->nvm, r->ckpt_offset, r->st.num_classes, &prev, &found);
        if (s) return s;
        r->st.seq = found ? prev.seq : 0u;
    }
    r->st_committed = 0;
    r->st.op = 0u;
    r->st.unit = 0u;
    r->st.flags = flags;
#if FM_EXITS
    memset(r->st.acc, 0, sizeof(r->st.acc));
    if (r->exits) fm_exit_begin(r->exits, r->head, r->st.acc);
#endif
    FM_TRACE_EVENT(FM_EVENT_COMMIT);
    s = fm_ckpt_commit(r->nvm, r->ckpt_offset, &r->st);
    FM_TRACE_EVENT(FM_EVENT_COMMITTED);
    if (s) return s;
    r->st_committed = 1;
    r->commits++;
    return FM_OK;
}

fm_status fm_prepare_input(fm_intermittent *r)
{
    return commit_fresh(r, 0u);
}

fm_status fm_start(fm_intermittent *r)
{
    return commit_fresh(r, FM_CKPT_RUNNING);
}

#if FM_EXITS
/* Stop at exit e? Explicit stop, confidence at the threshold (fm_exit_confident), or not enough
 * energy to reach the next exit point (or the end of the model): the work of the main operators
 * after exit e up to the next exit, priced by the metadata's per-operator costs x
 * energy_per_cycle when the table is complete and energy_per_cycle > 0, otherwise by MACs x
 * energy_per_mac. All in integers: reading < work x price exactly when reading / price < work
 * (no product to overflow); a price of 0 never stops. */
static uint8_t exit_decision(const fm_intermittent *r, uint16_t e)
{
    const fm_exit_head *h = r->exits;
    if (r->stop_at_exit == (int16_t)e) return 1;
    if (r->use_thresholds) {
        int8_t logits[FM_CKPT_MAX_CLASSES];
        fm_exit_logits(h, r->head, r->st.acc, logits);
        if (fm_exit_confident(h, r->head, e, logits)) return 1;
    }
    if (r->energy) {
        const uint8_t last = (uint32_t)e + 1u >= h->num_exits;
        uint32_t work, price;
        if (h->has_costs && r->energy_per_cycle > 0u) {     /* the device's own cost table */
            work = (last ? h->cost_total : h->cost_to_exit[e + 1u]) - h->cost_to_exit[e];
            price = r->energy_per_cycle;
        } else {
            work = (last ? h->macs_total : h->macs_to_exit[e + 1u]) - h->macs_to_exit[e];
            price = r->energy_per_mac;
        }
        if (price > 0u && r->energy(r->energy_ctx) / price < work) return 1;
    }
    return 0;
}
#endif

fm_status fm_answer(const fm_intermittent *r, int16_t *exit_index, int8_t *logits)
{
    fm_status s = exits_supported(r);
    if (s) return s;
    if (!(r->st.flags & FM_CKPT_DONE)) return FM_ERR_STATE;
    if (!(r->st.flags & FM_CKPT_EARLY)) {
        *exit_index = r->exits ? (int16_t)r->exits->num_exits : 0;
        return FM_OK;
    }
#if FM_EXITS
    /* an early answer needs the exit head and an exit point passed (a damaged record) */
    if (!r->exits || FM_CKPT_PASSED(r->st.flags) == 0u || FM_CKPT_PASSED(r->st.flags) > r->exits->num_exits)
        return FM_ERR_STATE;
    *exit_index = (int16_t)(FM_CKPT_PASSED(r->st.flags) - 1u);
    fm_exit_logits(r->exits, r->head, r->st.acc, logits);
    return FM_OK;
#else
    (void)logits;                    /* an early answer written by a build with exits */
    return FM_ERR_UNSUPPORTED;
#endif
}

fm_status fm_exit_now(fm_intermittent *r, int16_t *exit_index, int8_t *logits)
{
    fm_status s = exits_supported(r);
    if (s) return s;
    if (!r->exits || FM_CKPT_PASSED(r->st.flags) == 0u) return FM_ERR_STATE;
    if (!(r->st.flags & FM_CKPT_DONE)) {
        r->st_committed = 0;
        r->st.flags = (uint16_t)((r->st.flags & 0xFF00u) | FM_CKPT_DONE | FM_CKPT_EARLY);
        s = fm_ckpt_commit(r->nvm, r->ckpt_offset, &r->st);
        if (s) return s;
        r->st_committed = 1;
        r->commits++;
    }
    return fm_answer(r, exit_index, logits);
}

fm_status fm_resume(fm_intermittent *r, uint32_t max_steps, uint8_t *done)
{
    uint8_t found, finished = 0;
    uint32_t steps = 0;
    fm_status s;
    *done = 0;
    if (r->granularity == 0u) return FM_ERR_ARG;
    s = exits_supported(r);
    if (s) return s;
    if (!r->st_committed) {          /* after a reset: the latest valid record */
        s = fm_ckpt_load(r->nvm, r->ckpt_offset, r->st.num_classes, &r->st, &found);
        if (s) return s;
        if (!found) return FM_ERR_STATE;
        r->st_committed = 1;
    }
    if (!(r->st.flags & (FM_CKPT_RUNNING | FM_CKPT_DONE))) return FM_ERR_STATE;
    /* a record whose position is not one of this model's is not this model's progress */
    if (r->st.op > r->it->num_ops ||
        (r->st.op < r->it->num_ops && r->st.unit > FM_OP(r->it, r->st.op)->units) ||
        (r->st.op == r->it->num_ops && r->st.unit != 0u) ||
        (r->exits && FM_CKPT_PASSED(r->st.flags) > r->exits->num_exits) ||
        ((r->st.flags & FM_CKPT_EARLY) && (!r->exits || FM_CKPT_PASSED(r->st.flags) == 0u)) ||
        (!r->exits && FM_CKPT_PASSED(r->st.flags) != 0u))
        return fm_fail(r->it, FM_ERR_FORMAT, "checkpoint record out of range for this model", (int32_t)r->st.op,
                       -1, (int32_t)r->st.unit);
    if (r->st.flags & FM_CKPT_DONE) {
        *done = 1;
        return FM_OK;
    }
    if (!r->planned) {
#if FM_PREPARE_ON_DEVICE
        s = fm_plan_ops(r);
        if (s) return s;
#else
        return FM_ERR_STATE;         /* the plan comes with the prepared image */
#endif
    }
    while (!finished && (max_steps == 0u || steps < max_steps)) {
        fm_cursor cur;
        uint32_t n;
        uint8_t early = 0;
#if FM_EXITS
        uint16_t op;
#endif
        cur.op = r->st.op;
        cur.unit = r->st.unit;
        n = plan_step(r, cur, NULL, NULL);
        r->st_committed = 0;         /* r->st runs ahead of NVM until the commit below */
        if (steps == 0u) FM_TRACE_FIRST_UNIT();
        s = fm_step(r->it, &cur, n, &finished);
        if (s) return s;
        r->units_run += n;
#if FM_EXITS
        /* Exit points completed by this step: accumulate, then ask the policy. The new
         * accumulator is committed together with the cursor, so a failure before the commit
         * re-runs the step and the accumulation from the old state. */
        for (op = r->st.op; r->exits && op < cur.op && !early; op++) {
            int16_t e = fm_exit_at_op(r->exits, op);
            if (e < 0 || (uint16_t)e != FM_CKPT_PASSED(r->st.flags)) continue;
            s = fm_exit_accumulate(r->exits, r->it, r->head, (uint16_t)e, r->st.acc);
            if (s) return s;
            r->st.flags = (uint16_t)((r->st.flags & 0xFFu) | ((uint16_t)(e + 1) << 8));
            early = exit_decision(r, (uint16_t)e);
            FM_TRACE_EVENT(FM_EVENT_EXIT + (uint16_t)e);
        }
#endif
        r->st.op = cur.op;
        r->st.unit = cur.unit;
        if (early) {
            finished = 1;
            r->st.flags = (uint16_t)((r->st.flags & 0xFF00u) | FM_CKPT_DONE | FM_CKPT_EARLY);
        } else if (finished) {
            r->st.flags = (uint16_t)((r->st.flags & 0xFF00u) | FM_CKPT_DONE);
        }
        FM_TRACE_EVENT(FM_EVENT_COMMIT);
        s = fm_ckpt_commit(r->nvm, r->ckpt_offset, &r->st);
        FM_TRACE_EVENT(FM_EVENT_COMMITTED);
        if (s) return s;
        r->st_committed = 1;
        r->commits++;
        steps++;
    }
    *done = finished;
    return FM_OK;
}

uint32_t fm_plan_steps(const fm_intermittent *r, fm_step_info *steps, uint32_t max_steps,
                       fm_step_info *largest)
{
    const fm_interp *it = r->it;
    fm_cursor cur;
    uint32_t count = 0;
    memset(largest, 0, sizeof *largest);
    cur.op = 0;
    cur.unit = 0;
    if (r->granularity == 0u || exits_supported(r) != FM_OK) return 0;
    if (!r->planned && (!FM_PREPARE_ON_DEVICE || fm_plan_ops((fm_intermittent *)(uintptr_t)r) != FM_OK)) return 0;
    while (cur.op < it->num_ops) {
        fm_step_info si;
        si.units = plan_step(r, cur, &si.work, &si.cost);
        while (cur.op < it->num_ops && FM_OP(it, cur.op)->units == 0u && si.units > 0u) cur.op++;
        si.op = cur.op;                          /* the operator whose units the step runs */
        si.unit = cur.unit;
        /* where fm_step leaves the cursor: past the step's units and the alias operators after */
        cur.unit += si.units;
        while (cur.op < it->num_ops && cur.unit >= FM_OP(it, cur.op)->units) {
            cur.op++;
            cur.unit = 0;
        }
        if (steps && count < max_steps) steps[count] = si;
        if (si.cost > largest->cost || (si.cost == largest->cost &&
            (si.work > largest->work || (si.work == largest->work && si.units > largest->units))))
            *largest = si;
        count++;
    }
    return count;
}

uint32_t fm_largest_step_units(const fm_interp *it, uint32_t granularity, uint16_t *op)
{
    uint32_t best = 0u;
    uint16_t i;
    *op = 0u;
    for (i = 0; i < fm_num_ops(it); i++) {
        uint32_t u = fm_op_units(it, i);
        uint32_t step = u < granularity ? u : granularity;
        if (step > best) {
            best = step;
            *op = i;
        }
    }
    return best;
}
