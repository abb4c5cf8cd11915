/* SVDF, int8 input and output with int16 (or int8) time weights and state: TFLite Micro's integer
 * reference (each filter's memory shifted by one, the newest column from the feature weights,
 * rescaled and clamped, plus the state's zero point, wrapped to the state type; the time weights over the memory, reduced over the rank, bias,
 * rescaled into the output).
 *
 * The state is a variable tensor: arena memory for the whole graph (in NVM with the intermittent
 * runtime) with a word that says it was initialized for this model (zeros, or the int8 state's
 * zero point, as TFLite Micro resets it). It is never updated in place by a unit that reads it:
 *   units [0, BF)        (batch, filter): the new memory row into the scratch and that row's
 *                        time product (int32) into the scratch; reads the state (unit 0 first
 *                        initializes it when its word says so)
 *   units [BF, 2BF)      the new rows copied into the state
 *   units [2BF, 2BF+BU)  (batch, unit): bias + the rank's time products, rescaled
 * so re-running units after a failure writes the same bytes, provided one atomic step never holds
 * both unit k and unit BF + k: the intermittent plan (checkpoint.c) caps SVDF steps at BF units. */
#include <string.h>

#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

enum { SV_IN = 0, SV_FEATURE = 1, SV_TIME = 2, SV_BIAS = 3, SV_STATE = 4 };

#if FM_PREPARE_FLOAT
/* A rescaling a * b / c computed in float, as TFLite Micro does, then split into multiplier and
 * shift (shift 127 when it cannot be: refused by the caller). */
static void rescale(float a, float b, float c, int32_t *q, int32_t *shift)
{
    const float m = a * b / c;
    if (!(c > 0.0f) || !fm_quantize_multiplier((double)m, q, shift)) *shift = 127;
}
#endif

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_svdf_params *p = &op->p.svdf;
    const fm_tensor *in, *wf, *wfd, *wt, *bias, *st, *out;
    fm_fb fb;
    int32_t q1 = 0, s1 = 127, q2 = 0, s2 = 127;
    fm_status s;
    if (op->num_in != 5 || op->in[SV_BIAS] < 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "SVDF needs input, feature and time weights, bias and state", opi, -1,
                       op->num_in);
    if ((s = fm_expect(it, opi, op->in[SV_IN], FM_INT8, &in)) != FM_OK) return s;
    if ((s = fm_expect_weights(it, opi, op->in[SV_FEATURE], &wf, &wfd)) != FM_OK) return s;
    if (wfd->flags & FM_T_SPARSE) return fm_fail(it, FM_ERR_UNSUPPORTED, "SVDF with sparse weights", opi, op->in[SV_FEATURE], 0);
    if (op->in[SV_STATE] < 0) return fm_fail(it, FM_ERR_FORMAT, "operator input missing", opi, -1, SV_STATE);
    st = &it->tensors[op->in[SV_STATE]];
    if (!(st->flags & FM_T_VARIABLE) || (st->type != FM_INT16 && st->type != FM_INT8))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "SVDF state must be an int16 or int8 variable tensor", opi,
                       op->in[SV_STATE], st->type);
    if ((s = fm_expect(it, opi, op->in[SV_TIME], st->type, &wt)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->in[SV_BIAS], FM_INT32, &bias)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (!(wt->flags & FM_T_CONST) || !(bias->flags & FM_T_CONST))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "SVDF time weights and bias must be constant", opi, op->in[SV_TIME], 0);
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    p->rank = fb_i32(&fb, op->opts, 0, 0);                   /* SVDFOptions.rank */
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad SVDF options", opi, -1, 0);
    if (in->ndim != 2 || wf->ndim != 2 || wt->ndim != 2 || st->ndim != 2 || out->ndim != 2)
        return fm_fail(it, FM_ERR_FORMAT, "SVDF tensors must be 2-D", opi, -1, 0);
    p->batch = in->dims[0];
    p->input = in->dims[1];
    p->filters = wf->dims[0];
    p->memory = wt->dims[1];
    if (p->rank < 1 || p->filters % p->rank != 0)
        return fm_fail(it, FM_ERR_FORMAT, "SVDF rank does not divide the filters", opi, -1, p->rank);
    p->units = p->filters / p->rank;
    if (wf->dims[1] != p->input || wt->dims[0] != p->filters || fm_elements(bias) != p->units ||
        out->dims[0] != p->batch || out->dims[1] != p->units || st->dims[0] != p->batch ||
        (int32_t)st->dims[1] != p->memory * p->filters)
        return fm_fail(it, FM_ERR_FORMAT, "SVDF shapes do not match", opi, -1, 0);
#if FM_PREPARE_FLOAT
    {
        /* TFLite Micro's check that the bias has the scale of state * time weights */
        const double want = (double)(st->scale * wt->scale), d = (double)bias->scale - want;
        if (d >= 1e-5 || d <= -1e-5)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "SVDF bias scale differs from state scale * time weights scale",
                           opi, op->in[SV_BIAS], 0);
        rescale(in->scale, wf->scale, st->scale, &q1, &s1);
        rescale(st->scale, wt->scale, out->scale, &q2, &s2);
    }
#endif
    p->mult1 = fm_pre_value(it, q1);
    p->shift1 = fm_pre_value(it, s1);
    p->mult2 = fm_pre_value(it, q2);
    p->shift2 = fm_pre_value(it, s2);
    if (p->shift1 > 30 || p->shift1 < -31 || p->shift2 > 30 || p->shift2 < -31)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "SVDF scales out of range", opi, -1, 0);
    p->in_zp = in->zero_point;
    p->st_zp = st->zero_point;
    p->out_zp = out->zero_point;
    p->elem = st->type == FM_INT16 ? 2u : 1u;
    /* scratch: the time products (int32, batch x filters), then the new state */
    op->scratch_bytes = 4u * (uint32_t)(p->batch * p->filters) + st->bytes;
    op->units = 2u * (uint32_t)(p->batch * p->filters) + (uint32_t)(p->batch * p->units);
    return FM_OK;
}

/* Element i of a state or time-weight vector of int8 or int16 values. */
static int32_t ld(const uint8_t *v, uint8_t elem, int32_t i)
{
    return elem == 2u ? (int32_t)((const int16_t *)(const void *)v)[i] : (int32_t)((const int8_t *)(const void *)v)[i];
}

static void st_elem(uint8_t *v, uint8_t elem, int32_t i, int32_t x)
{
    if (elem == 2u) ((int16_t *)(void *)v)[i] = (int16_t)x;
    else ((int8_t *)(void *)v)[i] = (int8_t)x;
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_svdf_params *p = &op->p.svdf;
    const fm_tensor *st = fm_root(it, op->in[SV_STATE]);
    const int32_t bf = p->batch * p->filters, m = p->memory;
    uint8_t *state = fm_data(it, op->in[SV_STATE]);
    int32_t *prod = (int32_t *)(void *)(it->arena + op->scratch_off);
    uint8_t *fresh = (uint8_t *)(prod + bf);
    const int32_t lo = p->elem == 2u ? -32768 : -128, hi = p->elem == 2u ? 32767 : 127;
    uint32_t u;
    if (begin == 0u && *fm_state_word(it, st) != fm_state_ready(it)) {
        /* TFLite Micro's reset: zeros (int16), the zero point (int8) */
        volatile uint8_t *v = state;
        uint32_t k;
        for (k = 0; k < st->bytes; k++) v[k] = p->elem == 2u ? 0u : (uint8_t)p->st_zp;
        *fm_state_word(it, st) = fm_state_ready(it);
    }
    for (u = begin; u < end; u++) {
        if (u < (uint32_t)bf) {
            /* row (b, f): shifted by one, the newest value last; its time product */
            const int32_t b = (int32_t)u / p->filters, f = (int32_t)u % p->filters;
            const int8_t *x = (const int8_t *)fm_data(it, op->in[SV_IN]) + b * p->input;
            const int8_t *w = (const int8_t *)fm_data(it, op->in[SV_FEATURE]) + f * p->input;
            const uint8_t *tw = fm_data(it, op->in[SV_TIME]);
            const int32_t row = (int32_t)u * m;
            int32_t c, acc = 0, v, sum = 0;
            for (c = 0; c < p->input; c++) acc = FM_WRAP_ADD(acc, (int32_t)w[c] * ((int32_t)x[c] - p->in_zp));
            /* clamped, then the zero point added with the state type's wrap-around (TFLite
             * Micro's from PyPI, the oracle; newer sources add it before the clamp) */
            v = fm_mul_by_qm(acc, p->mult1, p->shift1);
            v = (v < lo ? lo : v > hi ? hi : v) + p->st_zp;
            v = p->elem == 2u ? (int32_t)(((uint32_t)v + 32768u) & 0xFFFFu) - 32768 :
                                (int32_t)(((uint32_t)v + 128u) & 0xFFu) - 128;
            for (c = 0; c + 1 < m; c++) {
                const int32_t old = ld(state, p->elem, row + c + 1);
                st_elem(fresh, p->elem, row + c, old);
                sum = FM_WRAP_ADD(sum, ld(tw, p->elem, f * m + c) * (old - p->st_zp));
            }
            st_elem(fresh, p->elem, row + m - 1, v);
            prod[u] = FM_WRAP_ADD(sum, ld(tw, p->elem, f * m + m - 1) * (v - p->st_zp));
        } else if (u < 2u * (uint32_t)bf) {
            const uint32_t r = (u - (uint32_t)bf) * (uint32_t)m * p->elem;
            memcpy(state + r, fresh + r, (uint32_t)m * p->elem);
        } else {
            const int32_t k = (int32_t)u - 2 * bf, b = k / p->units, j = k % p->units;
            const int32_t *pr = prod + b * p->filters + j * p->rank;
            int32_t acc = ((const int32_t *)(const void *)fm_data(it, op->in[SV_BIAS]))[j], r, v;
            for (r = 0; r < p->rank; r++) acc = FM_WRAP_ADD(acc, pr[r]);
            v = fm_mul_by_qm(acc, p->mult2, p->shift2) + p->out_zp;
            ((int8_t *)fm_data(it, op->out))[k] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
    }
}

const fm_kernel fm_kernel_svdf = {FM_OP_SVDF, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(svdf)};
