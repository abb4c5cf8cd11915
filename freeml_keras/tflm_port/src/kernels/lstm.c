/* UNIDIRECTIONAL_SEQUENCE_LSTM, int8 activations, int8 weights, int16 cell state and int32 bias
 * (TFLite Micro's 8x8->16 integer LSTM, the form the TFLite converter gives a Keras LSTM): per
 * sequential step, each gate is two fully connected products (input, recurrent hidden state)
 * rescaled to Q3.12 int16 and added with saturation, then sigmoid or tanh (a table of 256 knots
 * with interpolation, int16 to Q0.15); the cell becomes forget x cell + input x cell gate
 * (saturated, clipped), the hidden state output x tanh(cell), requantized to int8.
 *
 * The hidden and cell states are variable tensors: arena memory for the whole graph (NVM with
 * the intermittent runtime) with a word that says they were initialized for this model (the
 * hidden state's zero point, zeros for the cell, as TFLite Micro resets them). Every gate reads
 * the whole hidden state, so no unit updates it in place. Per sequential step s (R rows of S
 * state elements; U = R * S + 1 units):
 *   units [sU, sU + RS)      element (r, j): its four gates, new cell and hidden value into
 *                            the scratch bank s % 2; reads the input, the states
 *   unit  sU + RS            the bank copied into the states and the output rows of step s
 * Re-running units after a failure writes the same bytes provided no atomic step holds a
 * step's element units and its copy: the intermittent plan (checkpoint.c) ends a step before
 * every copy unit. A copy and the next step's element units may share one: they write
 * different banks. */
#include <string.h>

#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

enum { L_IN = 0, L_W = 1, L_R = 5, L_BIAS = 12, L_H = 18, L_C = 19, L_NUM = 24 };

/* sigmoid(i / 24) in Q0.16 at the 256 knots TFLite's int16 LOGISTIC and TANH interpolate
 * between (the values its kernels give at the knots; tests/test_lstm.py reads them back from
 * TFLite Micro's TANH). */
static const uint16_t knots[256] = {
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149,
    40794, 41432, 42064, 42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369,
    47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409, 51865, 52311, 52745, 53169,
    53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370,
    60565, 60753, 60935, 61110, 61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302,
    62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186, 63279, 63368, 63454, 63536,
    63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786,
    64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079,
    65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258,
    65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433,
    65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474,
    65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498,
    65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522,
    65523, 65523, 65524, 65524, 65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528,
    65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530, 65530, 65530, 65531, 65531,
    65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
    65534, 65534, 65534, 65535,
};

static int32_t clamp16(int32_t v)
{
    return v < -32768 ? -32768 : v > 32767 ? 32767 : v;
}

/* TFLite's int16 logistic of a Q3.12 value (input multiplier 3), Q0.15 out. */
static int16_t sigmoid16(int16_t x)
{
    const int32_t in = FM_MUL32(x, 3);
    const uint32_t a = (uint32_t)(in < 0 ? -in : in), uh = a >> 9;
    uint32_t r;
    if (uh >= 255u) {
        r = (uint32_t)0x7FFF << 10;
    } else {
        const uint32_t ua = knots[uh], ub = knots[uh + 1u];
        r = (ua << 9) + (a & 0x1FFu) * (ub - ua);
    }
    r = in >= 0 ? r + 512u : ((uint32_t)1 << 25) - r + 511u;
    return (int16_t)(r >> 10);
}

/* TFLite's int16 tanh: the input times 3 << shift (shift >= 0) or 3 / 2^-shift (rounded),
 * Q0.15 out. */
static int16_t tanh16(int16_t x, int8_t shift)
{
    int32_t in, r;
    uint32_t a, uh;
    if (shift >= 0) {
        in = (int32_t)((uint32_t)FM_MUL32(x, 3) << shift);
    } else {
        in = FM_MUL32(x, 3) + ((int32_t)1 << (-shift - 1));
        in = in >= 0 ? in >> -shift : -(int32_t)(((uint32_t)-(in + 1) >> -shift) + 1u);
    }
    a = (uint32_t)(in < 0 ? -in : in);
    uh = a >> 8;
    if (uh >= 255u) {
        r = (int32_t)0xFFFF << 8;
    } else {
        const int32_t ua = knots[uh], ub = knots[uh + 1u];
        r = (ua << 8) + (int32_t)(a & 0xFFu) * (ub - ua);
    }
    r = in >= 0 ? r - ((int32_t)1 << 23) + 128 : -r + ((int32_t)1 << 23) + 127;
    return (int16_t)(r >= 0 ? r >> 8 : -(int32_t)(((uint32_t)-(r + 1) >> 8) + 1u));
}

#if FM_PREPARE_FLOAT
/* a * b / c to q * 2^(shift - 31); shift 127 when it cannot be (refused by the caller). */
static void rescale(double a, double b, double c, int32_t *q, int32_t *shift)
{
    if (!(c > 0.0) || !fm_quantize_multiplier(a * b / c, q, shift)) *shift = 127;
}
#endif

static fm_status weights(fm_interp *it, uint16_t opi, const fm_lstm_params *p, int32_t k, int32_t rows,
                         int32_t cols, const fm_tensor **w)
{
    const fm_tensor *wd;
    fm_status s;
    if (p->t[k] < 0) return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM without an input gate (CIFG) not supported", opi, -1, k);
    if ((s = fm_expect_weights(it, opi, p->t[k], w, &wd)) != FM_OK) return s;
    if (wd->flags & FM_T_SPARSE) return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM with sparse weights", opi, p->t[k], 0);
    if ((*w)->num_scales > 1 || (*w)->zero_point != 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM weights must have one scale and zero point 0", opi, p->t[k], 0);
    if ((*w)->ndim != 2 || (*w)->dims[0] != rows || (*w)->dims[1] != cols)
        return fm_fail(it, FM_ERR_FORMAT, "LSTM weights shape differs from the state and input sizes", opi, p->t[k], 0);
    return FM_OK;
}

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_lstm_params *p = &op->p.lstm;
    const fm_tensor *in, *h, *c, *out, *w[8], *b;
    fm_lstm_q *q;
    fm_fb fb;
    int32_t g, k, act, qv[24];
    uint8_t n = 0;
    float clip;
    fm_status s;
    static const int8_t optional[10] = {9, 10, 11, 16, 17, 20, 21, 22, 23, -1};
    if (p->count != L_NUM)
        return fm_fail(it, FM_ERR_FORMAT, "LSTM needs 24 inputs", opi, -1, p->count);
    for (k = 0; optional[k] >= 0; k++)
        if (p->t[optional[k]] >= 0)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM with peepholes, projection or layer norm not supported",
                           opi, p->t[optional[k]], optional[k]);
    if ((s = fm_expect(it, opi, p->t[L_IN], FM_INT8, &in)) != FM_OK) return s;
    if (p->t[L_H] < 0 || p->t[L_C] < 0) return fm_fail(it, FM_ERR_FORMAT, "LSTM state missing", opi, -1, 0);
    h = &it->tensors[p->t[L_H]];
    c = &it->tensors[p->t[L_C]];
    if (!(h->flags & FM_T_VARIABLE) || h->type != FM_INT8)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM hidden state must be an int8 variable tensor", opi, p->t[L_H], h->type);
    if (!(c->flags & FM_T_VARIABLE) || c->type != FM_INT16)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM cell state must be an int16 variable tensor", opi, p->t[L_C], c->type);
    if ((s = fm_expect(it, opi, op->out, FM_INT8, &out)) != FM_OK) return s;
    if (!op->opts) return fm_fail(it, FM_ERR_FORMAT, "LSTM options missing", opi, -1, 0);
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    act = fb_i8(&fb, op->opts, 0, 0);                     /* fused_activation_function */
    clip = fb_f32(&fb, op->opts, 1, 0.0f);               /* cell_clip */
    p->time_major = (uint8_t)(fb_u8(&fb, op->opts, 3, 0) != 0u);
    if (fb_u8(&fb, op->opts, 5, 0))                       /* diagonal_recurrent_tensors */
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM with diagonal recurrent weights not supported", opi, -1, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad LSTM options", opi, -1, 0);
    if (act != 4) return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM cell activation must be tanh", opi, -1, act);
    if (in->ndim != 3 || out->ndim != 3 || h->ndim < 2)
        return fm_fail(it, FM_ERR_FORMAT, "LSTM input and output must be 3-D", opi, -1, 0);
    p->batch = in->dims[p->time_major ? 1 : 0];
    p->time = in->dims[p->time_major ? 0 : 1];
    p->input = in->dims[2];
    p->state = h->dims[1];
    p->rows = p->time_major ? p->batch : 1;
    p->steps = p->time_major ? p->time : p->batch * p->time;
    if ((uint32_t)fm_elements(h) != (uint32_t)p->batch * (uint32_t)p->state ||
        (uint32_t)fm_elements(c) != (uint32_t)p->batch * (uint32_t)p->state ||
        out->dims[0] != in->dims[0] || out->dims[1] != in->dims[1] || out->dims[2] != p->state)
        return fm_fail(it, FM_ERR_FORMAT, "LSTM shapes do not match", opi, -1, 0);
    for (g = 0; g < 4; g++) {
        if ((s = weights(it, opi, p, L_W + g, p->state, p->input, &w[g])) != FM_OK) return s;
        if ((s = weights(it, opi, p, L_R + g, p->state, p->state, &w[4 + g])) != FM_OK) return s;
        if ((s = fm_expect(it, opi, p->t[L_BIAS + g], FM_INT32, &b)) != FM_OK) return s;
        if (!(b->flags & FM_T_CONST) || b->ndim != 1 || b->dims[0] != p->state)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM bias must be constant, one value per state element", opi,
                           p->t[L_BIAS + g], 0);
    }
    memset(qv, 0, sizeof qv);
#if FM_PREPARE_FLOAT
    {
        /* TFLite Micro's order: gates forget, input, cell, output (input, then recurrent
         * product, each scale product taken in float, to 2^-12); the three element-wise
         * products; the cell scale's rounded log2; the quantized clip (-1: none). */
        static const uint8_t order[4] = {1, 0, 2, 3};
        const double q12 = 1.0 / 4096.0, q15 = 1.0 / 32768.0;
        double f, lg;
        int32_t e = 0;
        for (g = 0; g < 4; g++) {
            rescale((double)(in->scale * w[order[g]]->scale), 1.0, q12, &qv[4 * g], &qv[4 * g + 1]);
            rescale((double)(h->scale * w[4 + order[g]]->scale), 1.0, q12, &qv[4 * g + 2], &qv[4 * g + 3]);
        }
        rescale(q15, (double)c->scale, (double)c->scale, &qv[16], &qv[17]);
        rescale(q15, q15, (double)c->scale, &qv[18], &qv[19]);
        rescale(q15, q15, (double)h->scale, &qv[20], &qv[21]);
        /* round(log2(scale)): scale = f * 2^e, f in [0.5, 1); down when f < sqrt(1/2) */
        if (c->scale > 0.0f && c->scale < 1e30f) {
            for (f = (double)c->scale; f >= 1.0; f *= 0.5) e++;
            for (; f < 0.5; f *= 2.0) e--;
            lg = f * f < 0.5 ? (double)(e - 1) : (double)e;
            qv[22] = (int32_t)lg;
        } else {
            qv[22] = 127;
        }
        if (clip > 0.0f) {
            double v = (double)clip / (double)c->scale;
            qv[23] = c->scale > 0.0f ? (int32_t)(int16_t)(v < -32768.0 ? -32768.0 : v > 32767.0 ? 32767.0 : v) : 0;
        } else {
            qv[23] = -1;
        }
    }
#else
    (void)clip;
#endif
    q = (fm_lstm_q *)fm_state_alloc(it, (uint32_t)sizeof(fm_lstm_q));
    if (!q) return FM_ERR_MEMORY;
    p->q = q;
    for (k = 0; k < 24; k++) qv[k] = fm_pre_value(it, qv[k]);
    for (g = 0; g < 4; g++) {
        static const uint8_t order[4] = {1, 0, 2, 3};
        q->fc_mult[2 * order[g]] = qv[4 * g];
        q->fc_shift[2 * order[g]] = (int8_t)(qv[4 * g + 1] > 30 || qv[4 * g + 1] < -31 ? (n = 1, 0) : qv[4 * g + 1]);
        q->fc_mult[2 * order[g] + 1] = qv[4 * g + 2];
        q->fc_shift[2 * order[g] + 1] = (int8_t)(qv[4 * g + 3] > 30 || qv[4 * g + 3] < -31 ? (n = 1, 0) : qv[4 * g + 3]);
    }
    for (k = 0; k < 3; k++) {
        q->mul_mult[k] = qv[16 + 2 * k];
        q->mul_shift[k] = (int8_t)(qv[17 + 2 * k] > 30 || qv[17 + 2 * k] < -31 ? (n = 1, 0) : qv[17 + 2 * k]);
    }
    for (k = 0; k < 8; k++) n |= (uint8_t)(q->fc_mult[k] < 0);
    for (k = 0; k < 3; k++) n |= (uint8_t)(q->mul_mult[k] < 0);
    if (n) return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM scales out of range", opi, -1, 0);
    /* tanh of the cell: (15 + log2 scale) - 3 integer bits to shift; the product with 3 must
     * stay in 32 bits and a right shift under 32 */
    k = 12 + qv[22];
    if (k > 13 || k < -31)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM cell state scale out of range", opi, p->t[L_C], qv[22]);
    p->tanh_shift = (int8_t)k;
    if (qv[23] < -1 || qv[23] > 32767)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM cell clip out of range", opi, -1, qv[23]);
    p->clip = (int16_t)qv[23];
    p->in_zp = in->zero_point;
    p->h_zp = h->zero_point;
    if ((uint32_t)p->steps > 0x7FFFFFFFu / ((uint32_t)(p->rows * p->state) + 1u))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "LSTM too large (units of work)", opi, -1, p->steps);
    /* scratch: two banks of the new cell (int16) and hidden (int8) values of one step */
    op->scratch_bytes = 2u * 3u * (uint32_t)(p->rows * p->state);
    op->units = (uint32_t)p->steps * ((uint32_t)(p->rows * p->state) + 1u);
    return FM_OK;
}

/* One gate's pre-activation at element j: the input and recurrent products, each to Q3.12,
 * added with saturation. */
static int16_t gate(const fm_interp *it, const fm_lstm_params *p, int32_t g, const int8_t *x, const int8_t *h,
                    int32_t j)
{
    const int8_t *w = (const int8_t *)fm_data(it, p->t[L_W + g]) + j * p->input;
    const int8_t *r = (const int8_t *)fm_data(it, p->t[L_R + g]) + j * p->state;
    int32_t acc = ((const int32_t *)(const void *)fm_data(it, p->t[L_BIAS + g]))[j], acc2 = 0, k;
    for (k = 0; k < p->input; k++) acc = FM_WRAP_ADD(acc, FM_MAC16(w[k], (int32_t)x[k] - p->in_zp));
    for (k = 0; k < p->state; k++) acc2 = FM_WRAP_ADD(acc2, FM_MAC16(r[k], (int32_t)h[k] - p->h_zp));
    return (int16_t)clamp16(clamp16(fm_mul_by_qm_fast(acc, p->q->fc_mult[2 * g], p->q->fc_shift[2 * g])) +
                            clamp16(fm_mul_by_qm_fast(acc2, p->q->fc_mult[2 * g + 1], p->q->fc_shift[2 * g + 1])));
}

static void init_state(const fm_interp *it, int16_t t, uint8_t fill)
{
    const fm_tensor *st = fm_root(it, t);
    if (*fm_state_word(it, st) != fm_state_ready(it)) {
        volatile uint8_t *v = fm_data(it, t);
        uint32_t k;
        for (k = 0; k < st->bytes; k++) v[k] = fill;
        *fm_state_word(it, st) = fm_state_ready(it);
    }
}

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_lstm_params *p = &op->p.lstm;
    const fm_lstm_q *q = p->q;
    const uint32_t rs = (uint32_t)(p->rows * p->state), per = rs + 1u;
    int8_t *hs = (int8_t *)fm_data(it, p->t[L_H]);
    int16_t *cs = (int16_t *)(void *)fm_data(it, p->t[L_C]);
    int16_t *bank_c = (int16_t *)(void *)(it->arena + op->scratch_off);
    int8_t *bank_h = (int8_t *)(bank_c + 2u * rs);
    uint32_t u = begin, s = begin / per, e = begin % per;
    if (begin == 0u) {          /* TFLite Micro's reset: the hidden state's zero point, cell zeros */
        init_state(it, p->t[L_H], (uint8_t)p->h_zp);
        init_state(it, p->t[L_C], 0u);
    }
    for (; u < end; u++) {
        /* step s's rows: batch b = s / time at time s % time (batch-major), or all batches
         * at time s (time-major); the input and output rows are consecutive either way */
        const uint32_t bank = (s & 1u) * rs;
        const int32_t b0 = p->time_major ? 0 : (int32_t)s / p->time;
        if (e < rs) {
            const int32_t r = (int32_t)(e / (uint32_t)p->state), j = (int32_t)(e % (uint32_t)p->state);
            const int32_t row = (int32_t)s * p->rows + r, b = b0 + r;
            const int8_t *x = (const int8_t *)fm_data(it, p->t[L_IN]) + row * p->input;
            const int8_t *h = hs + b * p->state;
            const int16_t ig = sigmoid16(gate(it, p, 0, x, h, j)), fg = sigmoid16(gate(it, p, 1, x, h, j));
            const int16_t cg = tanh16(gate(it, p, 2, x, h, j), 0), og = sigmoid16(gate(it, p, 3, x, h, j));
            int32_t cn = clamp16(fm_mul_by_qm_fast(FM_MUL32(fg, cs[b * p->state + j]), q->mul_mult[0], q->mul_shift[0])) +
                         clamp16(fm_mul_by_qm_fast(FM_MUL32(ig, cg), q->mul_mult[1], q->mul_shift[1]));
            int32_t hn;
            cn = clamp16(cn);
            if (p->clip >= 0) cn = cn > p->clip ? p->clip : cn < -p->clip ? -p->clip : cn;
            hn = fm_mul_by_qm_fast(FM_MUL32(tanh16((int16_t)cn, p->tanh_shift), og), q->mul_mult[2], q->mul_shift[2]) + p->h_zp;
            bank_c[bank + e] = (int16_t)cn;
            bank_h[bank + e] = (int8_t)(hn < -128 ? -128 : hn > 127 ? 127 : hn);
            e++;
        } else {
            /* the bank into the states (rows b0 ..) and the output rows of step s */
            int8_t *o = (int8_t *)fm_data(it, op->out) + (int32_t)s * (int32_t)rs;
            memcpy(cs + b0 * p->state, bank_c + bank, 2u * rs);
            memcpy(hs + b0 * p->state, bank_h + bank, rs);
            memcpy(o, bank_h + bank, rs);
            s++;
            e = 0u;
        }
    }
}

const fm_kernel fm_kernel_unidirectional_sequence_lstm = {FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM,
                                                          FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(lstm)};
