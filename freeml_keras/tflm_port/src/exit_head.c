/* Incremental evaluation of the shared exit head (fm_exit.h). */
#include "freeml/fm_exit.h"

#include <string.h>

#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

/* The freeml metadata (fm_freeml_metadata) with its header size (32 bytes or more) and exit
 * records checked too: *stride 0 when the header or a record table is out of bounds. */
static const uint8_t *metadata(const uint8_t *model, uint32_t len, uint32_t *n, uint32_t *stride)
{
    const uint8_t *md = fm_freeml_metadata(model, len, n, stride);
    uint32_t exits_at, hsize;
    if (md != NULL && *stride != 0u) {
        exits_at = fm_ld_u32(md + 16);
        hsize = fm_ld_u16(md + 6);
        /* 16 * a is at most 65535 * 16: no overflow; offsets are compared by subtraction */
        if (hsize < 32u || hsize > *n || fm_ld_u32(md + 20) < hsize || exits_at < hsize || exits_at > *n ||
            FM_MD_EXIT_RECORD * (uint32_t)fm_ld_u16(md + 8) > *n - exits_at)
            *stride = 0u;
    }
    return md;
}

fm_status fm_exit_find(const uint8_t *model, uint32_t model_len, uint16_t *head_subgraph)
{
    uint32_t n, stride;
    const uint8_t *md = metadata(model, model_len, &n, &stride);
    if (md == NULL) return FM_ERR_UNSUPPORTED;
    if (stride == 0u) return FM_ERR_FORMAT;
    if (fm_ld_u16(md + 8) == 0u) return FM_ERR_UNSUPPORTED;
    *head_subgraph = fm_ld_u16(md + 12);
    return FM_OK;
}

static uint32_t sat_add(uint32_t a, uint32_t b)
{
    return a > 0xFFFFFFFFu - b ? 0xFFFFFFFFu : a + b;
}

static fm_status fail(fm_interp *it, const char *msg, int32_t value)
{
    return fm_fail(it, FM_ERR_UNSUPPORTED, msg, -1, -1, value);
}

fm_status fm_exit_init(fm_exit_head *h, const fm_interp *main, const fm_interp *head)
{
    fm_interp *hm = (fm_interp *)(uintptr_t)head;   /* only its error record is written */
    const uint8_t *md;
    uint32_t n, exits_at, ops_at, num_ops, k, stride;
    uint16_t e, o;
    memset(h, 0, sizeof *h);
    md = metadata(main->model, main->model_len, &n, &stride);
    if (md == NULL) return fail(hm, "model has no freeml metadata of version 1 or 2", 0);
    if (stride == 0u)
        return fm_fail(hm, FM_ERR_FORMAT, "freeml metadata records out of bounds", -1, -1, (int32_t)n);
    h->num_exits = fm_ld_u16(md + 8);
    h->num_classes = fm_ld_u16(md + 10);
    h->head_subgraph = fm_ld_u16(md + 12);
    num_ops = fm_ld_u16(md + 14);
    exits_at = fm_ld_u32(md + 16);
    ops_at = fm_ld_u32(md + 20);
    if (h->num_exits == 0u || h->num_exits > FM_MAX_EXITS) return fail(hm, "number of exits", h->num_exits);
    if (num_ops != main->num_ops)
        return fm_fail(hm, FM_ERR_FORMAT, "freeml metadata operator count differs from the model", -1, -1,
                       (int32_t)num_ops);
    /* the FULLY_CONNECTED that ends the head */
    for (o = 0; o < head->num_ops && FM_OP(head, o)->code != FM_OP_FULLY_CONNECTED; o++) {
    }
    if (o == head->num_ops) return fail(hm, "exit head has no FULLY_CONNECTED", 0);
    h->fc_op = o;
    if (FM_OP(head, o)->p.fc.out_c != (int32_t)h->num_classes || FM_OP(head, o)->p.fc.batches != 1)
        return fail(hm, "exit head FULLY_CONNECTED shape", FM_OP(head, o)->p.fc.out_c);
    for (e = 0; e < h->num_exits; e++) {
        const uint8_t *r = md + exits_at + FM_MD_EXIT_RECORD * e;
        int16_t t;
        const fm_op *fc = FM_OP(head, h->fc_op);
        h->main_tensor[e] = (int16_t)fm_ld_u32(r);
        h->head_input[e] = (int16_t)fm_ld_u32(r + 4);
        h->after_op[e] = (uint16_t)fm_ld_u32(r + 8);
        h->conf_limit[e] = fm_exit_conf_limit(fm_ld_f32(r + 12));
        if (h->main_tensor[e] < 0 || h->main_tensor[e] >= (int16_t)main->num_tensors ||
            h->head_input[e] < 0 || h->head_input[e] >= (int16_t)head->num_tensors ||
            h->after_op[e] >= main->num_ops)
            return fm_fail(hm, FM_ERR_FORMAT, "freeml exit record out of range", -1, -1, e);
        if (main->tensors[h->main_tensor[e]].bytes != head->tensors[h->head_input[e]].bytes)
            return fail(hm, "exit tensor and head input differ in size", e);
        /* follow the chain of single-input operators from the head input */
        t = h->head_input[e];
        for (;;) {
            uint16_t j;
            uint8_t found = 0;
            if (fc->in[0] == t) {                       /* straight into the FC */
                h->slice[e] = 0;
                break;
            }
            for (j = 0; j < head->num_ops; j++) {
                const fm_op *op = FM_OP(head, j);
                if (op->code == FM_OP_CONCATENATION) {
                    uint8_t q;
                    uint32_t off = 0;
                    for (q = 0; q < op->num_in; q++) {
                        if (op->in[q] == t) break;
                        off += head->tensors[op->in[q]].bytes;
                    }
                    if (q < op->num_in) {
                        if (op->out != fc->in[0]) return fail(hm, "concatenation does not feed the head FC", j);
                        h->slice[e] = off;
                        found = 2;
                        break;
                    }
                } else if (op->num_in >= 1 && op->in[0] == t && j != h->fc_op) {
                    if (h->chain_len[e] >= FM_MAX_CHAIN) return fail(hm, "exit chain too long", e);
                    h->chain[e][h->chain_len[e]++] = j;
                    t = op->out;
                    found = 1;
                    break;
                }
            }
            if (found == 2) break;
            if (!found) return fail(hm, "exit head input does not reach the FC", e);
        }
        h->pooled[e] = t;
        h->slice_len[e] = head->tensors[t].bytes;
        if (!fm_same_scale(head->tensors[t].scale, head->tensors[fc->in[0]].scale) ||
            head->tensors[t].zero_point != head->tensors[fc->in[0]].zero_point)
            return fail(hm, "pooled features and head FC input differ in quantization", e);
    }
    /* Per-operator work: MACs (both versions) and, in v2, the cost on the converted-for device.
     * The cost table is used only when complete: every operator that runs (units > 0) has a
     * nonzero cost. Alias operators (RESHAPE: no units, no work) may have 0; a 0 anywhere else
     * means "unknown", and then the energy rule keeps pricing MACs. */
    h->has_costs = stride >= FM_MD_OP_RECORD_V2;
    for (k = 0; k < num_ops; k++) {
        const uint8_t *rec = md + ops_at + stride * k;
        uint32_t macs = fm_ld_u32(rec), cost = stride >= FM_MD_OP_RECORD_V2 ? fm_ld_u32(rec + 16) : 0u;
        if (cost == 0u && fm_op_units(main, (uint16_t)k) > 0u) h->has_costs = 0;
        for (e = 0; e < h->num_exits; e++) {
            if (k <= h->after_op[e]) {
                h->macs_to_exit[e] = sat_add(h->macs_to_exit[e], macs);
                h->cost_to_exit[e] = sat_add(h->cost_to_exit[e], cost);
            }
        }
        h->macs_total = sat_add(h->macs_total, macs);
        h->cost_total = sat_add(h->cost_total, cost);
    }
    return FM_OK;
}

int16_t fm_exit_at_op(const fm_exit_head *h, uint16_t op)
{
    uint16_t e;
    for (e = 0; e < h->num_exits; e++) {
        if (h->after_op[e] == op) return (int16_t)e;
    }
    return -1;
}

void fm_exit_begin(const fm_exit_head *h, const fm_interp *head, int32_t *acc)
{
    const fm_op *fc = FM_OP(head, h->fc_op);
    uint16_t c;
    const uint8_t *bias = (fc->num_in > 2 && fc->in[2] >= 0) ? fm_root(head, fc->in[2])->cdata : NULL;
    for (c = 0; c < h->num_classes; c++) {
        acc[c] = bias ? (int32_t)fm_ld_u32(bias + 4u * c) : 0;
    }
}

fm_status fm_exit_accumulate(const fm_exit_head *h, const fm_interp *main, fm_interp *head,
                             uint16_t e, int32_t *acc)
{
    const fm_op *fc = FM_OP(head, h->fc_op);
    const fm_tensor *w = fm_root(head, fc->in[1]);
    const int8_t *filt = (const int8_t *)w->cdata;
    const int8_t *x;
    const int32_t in_off = fc->p.fc.in_off, depth = fc->p.fc.depth;
    const uint32_t lo = h->slice[e], hi = h->slice[e] + h->slice_len[e];
    uint8_t k, done;
    int32_t c;
    if (e >= h->num_exits) return FM_ERR_ARG;
    memcpy(fm_data(head, h->head_input[e]), fm_data(main, h->main_tensor[e]),
           head->tensors[h->head_input[e]].bytes);
    for (k = 0; k < h->chain_len[e]; k++) {
        fm_cursor cur;
        fm_status s;
        uint32_t units = fm_op_units(head, h->chain[e][k]);
        if (units == 0u) continue;          /* an alias (RESHAPE): nothing to run */
        cur.op = h->chain[e][k];
        cur.unit = 0;
        s = fm_step(head, &cur, units, &done);
        if (s) return s;
    }
    x = (const int8_t *)fm_data(head, h->pooled[e]);   /* column d of the FC input is x[d - lo] */
    for (c = 0; c < (int32_t)h->num_classes; c++) {
        int32_t sum = 0;
        if (w->flags & FM_T_SPARSE) {
            uint32_t j = fm_seg(w, (uint32_t)c), end = fm_seg(w, (uint32_t)c + 1);
            for (; j < end; j++) {
                uint32_t col = w->idx_w == 1 ? w->idx[j] :
                               w->idx_w == 2 ? fm_ld_u16(w->idx + 2u * j) : fm_ld_u32(w->idx + 4u * j);
                if (col >= lo && col < hi) sum += (int32_t)filt[j] * ((int32_t)x[col - lo] + in_off);
            }
        } else {
            const int8_t *row = filt + c * depth;
            uint32_t d;
            for (d = lo; d < hi; d++) sum += (int32_t)row[d] * ((int32_t)x[d - lo] + in_off);
        }
        /* wrap-around, never undefined: the accumulator comes from NVM (a record damaged
         * after its commit may hold anything) */
        acc[c] = (int32_t)((uint32_t)acc[c] + (uint32_t)sum);
    }
    return FM_OK;
}

void fm_exit_logits(const fm_exit_head *h, const fm_interp *head, const int32_t *acc, int8_t *logits)
{
    const fm_fc_params *p = &FM_OP(head, h->fc_op)->p.fc;
    uint16_t c;
    for (c = 0; c < h->num_classes; c++) {
        /* clamped before the offset is added (no overflow for any accumulator, the same
         * logits: the activation range lies inside [-128, 127]) */
        int32_t v = fm_mul_by_qm(acc[c], p->mult[c], p->shift[c]);
        if (v > 255) v = 255;
        if (v < -256) v = -256;
        v += p->out.off;
        if (v < p->out.min) v = p->out.min;
        if (v > p->out.max) v = p->out.max;
        logits[c] = (int8_t)v;
    }
}

/* The confidence rule in integer arithmetic (no floating point on the targets), decided
 * identically by freeml_keras.exits.stop_rule (fixed_point_exp_sum, confidence_limit).
 *
 * Sum of exp((logits[c] - max) * scale) over the classes in Q22 (FM_EXIT_CONF_BITS): the scale
 * in Q5.26 from its float bits (truncated; 2^31 and more: "any difference underflows"), times
 * each difference (a product past 2^31 - 1, 32 and more in magnitude, contributes 0), gemmlowp's
 * exp_on_negative_values (math.c, as SOFTMAX), each term rounded to Q22 (the largest logit's is
 * exactly 2^22). At most 64 classes: < 2^29. */
uint32_t fm_exit_exp_sum(const int8_t *logits, uint16_t n, float scale)
{
    const uint32_t bits = fm_f32_bits(scale);
    int16_t e = (int16_t)((bits >> 23) & 0xFFu), sh;
    uint32_t step = bits & 0x7FFFFFu, dmax, sum = 0;
    int16_t max = -128;
    uint16_t c;
    if (e == 0) e = 1;                          /* subnormal: no hidden bit */
    else step |= 0x800000u;
    sh = (int16_t)(124 - e);                    /* scale * 2^26 = step * 2^-sh, step < 2^24 */
    if (sh >= 24) step = 0u;
    else if (sh >= 0) step >>= sh;
    else step = sh > -8 ? step << -sh : 0x80000000u;
    dmax = step ? 0x7FFFFFFFu / step : 255u;    /* the largest difference d with d * step < 2^31 */
    for (c = 0; c < n; c++) {
        if (logits[c] > max) max = logits[c];
    }
    for (c = 0; c < n; c++) {
        const uint16_t d = (uint16_t)(max - logits[c]);
        if (d <= dmax)
            sum += ((uint32_t)fm_exp_on_negative_values_q5(-(int32_t)(d * step)) + 256u) >> 9;
    }
    return sum;
}

uint32_t fm_exit_conf_limit(float threshold)
{
    const uint32_t bits = fm_f32_bits(threshold), m = (bits & 0x7FFFFFu) | 0x800000u;
    const uint16_t e = (uint16_t)((bits >> 23) & 0xFFu);
    uint32_t q = 0, r = 1;
    uint16_t n;
    if (bits >> 31) return (bits & 0x7FFFFFFFu) > 0x7F800000u ? 0u : 0xFFFFFFFFu;  /* NaN; <= 0 */
    if (bits > 0x3F800000u) return 0u;          /* above 1, +inf, NaN: never */
    if (e < 118u) return 0xFFFFFFFFu;           /* below 2^-9: always */
    /* t = m * 2^(e - 150): floor(2^22 / t) = floor(2^(172 - e) / m) < 2^31, long division */
    for (n = (uint16_t)(172u - e); n > 0u; n--) {
        r += r;
        q += q;
        if (r >= m) {
            r -= m;
            q++;
        }
    }
    return q;
}

uint8_t fm_exit_confident(const fm_exit_head *h, const fm_interp *head, uint16_t e, const int8_t *logits)
{
    const fm_tensor *out = &head->tensors[FM_OP(head, h->fc_op)->out];
    return h->conf_limit[e] != 0u && fm_exit_exp_sum(logits, h->num_classes, out->scale) <= h->conf_limit[e];
}
