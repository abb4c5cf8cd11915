/* Helpers the kernels' prepare steps share: operand checks, state allocation, quantization
 * multipliers, activation ranges, windows. */
#include <string.h>

#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

void *fm_state_alloc(fm_interp *it, uint32_t n)
{
    void *p;
    n = FM_ALIGN4(n);
    if (!it->state || n > it->state_len - it->state_used) {
        fm_fail(it, FM_ERR_MEMORY, "state block too small", -1, -1, (int32_t)n);
        return NULL;
    }
    p = it->state + it->state_used;
    it->state_used += n;
    return p;
}

const fm_tensor *fm_root(const fm_interp *it, int16_t t)
{
    const fm_tensor *x = &it->tensors[t];
    while (x->alias >= 0) x = &it->tensors[x->alias];
    return x;
}

uint8_t *fm_data(const fm_interp *it, int16_t t)
{
    const fm_tensor *r = fm_root(it, t);
    if (r->cdata) return (uint8_t *)(uintptr_t)r->cdata;
    return it->arena + r->offset;
}

int32_t fm_elements(const fm_tensor *t)
{
    int32_t n = 1;
    uint8_t i;
    for (i = 0; i < t->ndim; i++) n *= t->dims[i];
    return n;
}

float fm_channel_scale(const fm_tensor *t, uint32_t c)
{
    if (t->num_scales > 1 && c < t->num_scales) return fm_ld_f32(t->scales + 4u * c);
    return t->scale;
}

uint32_t fm_seg(const fm_tensor *t, uint32_t r)
{
    switch (t->seg_w) {
    case 1: return t->seg[r];
    case 2: return ((const uint16_t *)(const void *)t->seg)[r];
    default: return ((const uint32_t *)(const void *)t->seg)[r];
    }
}

fm_status fm_expect(fm_interp *it, uint16_t opi, int16_t t, uint8_t type, const fm_tensor **out)
{
    if (t < 0 || t >= (int16_t)it->num_tensors)
        return fm_fail(it, FM_ERR_FORMAT, "operator input missing", opi, t, 0);
    if (it->tensors[t].type != type)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "tensor has an unsupported type", opi, t,
                       it->tensors[t].type);
    if (fm_root(it, t)->flags & FM_T_SPARSE)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "sparse tensor where dense data is needed", opi, t, 0);
    *out = &it->tensors[t];
    return FM_OK;
}

fm_status fm_expect_weights(fm_interp *it, uint16_t opi, int16_t t, const fm_tensor **out,
                            const fm_tensor **data)
{
    if (t < 0 || t >= (int16_t)it->num_tensors)
        return fm_fail(it, FM_ERR_FORMAT, "operator input missing", opi, t, 0);
    if (it->tensors[t].type != FM_INT8)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "weights must be int8", opi, t, it->tensors[t].type);
    *data = fm_root(it, t);
    if (!((*data)->flags & FM_T_CONST))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "weights must be constant", opi, t, 0);
    *out = &it->tensors[t];
    return FM_OK;
}

fm_status fm_weighted_operands(fm_interp *it, uint16_t opi, const fm_op *op, const fm_tensor **in,
                               const fm_tensor **f, const fm_tensor **fd, const fm_tensor **out,
                               const fm_tensor **bias)
{
    fm_status s;
    *bias = NULL;
    if (op->num_in < 2) return fm_fail(it, FM_ERR_FORMAT, "operator needs input and weights", opi, -1, 0);
    if ((s = fm_expect(it, opi, op->in[0], FM_INT8, in)) != FM_OK) return s;
    if ((s = fm_expect_weights(it, opi, op->in[1], f, fd)) != FM_OK) return s;
    if ((s = fm_expect(it, opi, op->out, FM_INT8, out)) != FM_OK) return s;
    if (op->num_in > 2 && op->in[2] >= 0) {
        if ((s = fm_expect(it, opi, op->in[2], FM_INT32, bias)) != FM_OK) return s;
        if (!((*bias)->flags & FM_T_CONST)) return fm_fail(it, FM_ERR_UNSUPPORTED, "bias must be constant", opi, op->in[2], 0);
    }
    return FM_OK;
}

fm_status fm_check_bias(fm_interp *it, uint16_t opi, const fm_op *op, const fm_tensor *bias, int32_t out_c)
{
    if (bias && fm_elements(bias) != out_c)
        return fm_fail(it, FM_ERR_FORMAT, "bias size differs from output channels", opi, op->in[2], 0);
    return FM_OK;
}

uint32_t fm_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

uint8_t fm_same_scale(float a, float b)
{
    const uint32_t x = fm_f32_bits(a), y = fm_f32_bits(b);
    /* a == b: the same bits and not NaN, or both zero (+0 == -0) */
    return x == y ? (x & 0x7FFFFFFFu) <= 0x7F800000u : ((x | y) & 0x7FFFFFFFu) == 0u;
}

fm_status fm_same_quant(fm_interp *it, uint16_t opi, const fm_tensor *a, const fm_tensor *b)
{
    if (!fm_same_scale(a->scale, b->scale) || a->zero_point != b->zero_point)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "input and output quantization differ", opi,
                       (int32_t)(b - it->tensors), 0);
    return FM_OK;
}

void fm_alias(fm_interp *it, int16_t out, int16_t in)
{
    it->tensors[out].alias = in;
}

#if FM_PREPARE_FLOAT
/* zero_point + round(real / scale) of an int8 output: a fused activation's bound. Added in 64
 * bits and saturated: a hostile scale rounds to an int32 limit and the zero point must not
 * overflow it (libFuzzer found 7 + 2147483647); the bound is outside int8 either way. */
static FM_NOINLINE int32_t quantized_bound(const fm_tensor *out, float real)
{
    const int64_t v = (int64_t)out->zero_point + (int64_t)fm_round_f(real / out->scale);
    return v > (int64_t)INT32_MAX ? INT32_MAX : v < (int64_t)INT32_MIN ? INT32_MIN : (int32_t)v;
}
#endif

fm_status fm_activation_range(fm_interp *it, uint16_t opi, int32_t act, const fm_tensor *out,
                              int32_t *mn, int32_t *mx)
{
    /* TFLite ActivationFunctionType 0 NONE, 1 RELU, 2 RELU_N1_TO_1, 3 RELU6: real lower bound
     * (1 .. 3) and upper bound (2, 3) */
    int32_t lo = -128, hi = 127;
    if (act < 0 || act > 3)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "unsupported fused activation", opi, -1, act);
#if FM_PREPARE_FLOAT
    {
        static const int8_t lower[4] = {0, 0, -1, 0}, upper[4] = {0, 0, 1, 6};
        int32_t q;
        if (!(out->scale > 0))
            return fm_fail(it, FM_ERR_UNSUPPORTED, "output scale must be positive", opi, -1, 0);
        if (act >= 1) {
            q = quantized_bound(out, (float)lower[act]);
            if (q > lo) lo = q;
        }
        if (act >= 2) {
            q = quantized_bound(out, (float)upper[act]);
            if (q < hi) hi = q;
        }
    }
#else
    (void)out;
#endif
    *mn = fm_pre_value(it, lo);
    *mx = fm_pre_value(it, hi);
    return FM_OK;
}

fm_status fm_conv_multipliers(fm_interp *it, uint16_t opi, const fm_tensor *in,
                              const fm_tensor *filter, const fm_tensor *out, int32_t channels,
                              uint8_t per_tensor_product, int32_t **mult, int8_t **shift)
{
    int32_t c, sh = 0, q = 0;
    if (filter->num_scales > 1 && filter->num_scales != (uint32_t)channels)
        return fm_fail(it, FM_ERR_FORMAT, "per-channel scale count differs from channels", opi,
                       -1, filter->num_scales);
    *mult = (int32_t *)fm_state_alloc(it, 4u * (uint32_t)channels);
    *shift = (int8_t *)fm_state_alloc(it, (uint32_t)channels);
    if (!*mult || !*shift) return FM_ERR_MEMORY;
    for (c = 0; c < channels; c++) {
#if FM_PREPARE_FLOAT
        double eff;
        if (per_tensor_product) {   /* TFLite's FULLY_CONNECTED multiplies the two scales in float */
            const float prod = in->scale * filter->scale;
            eff = (double)prod / (double)out->scale;
        } else {
            eff = (double)in->scale * (double)fm_channel_scale(filter, (uint32_t)c) / (double)out->scale;
        }
        if (!fm_quantize_multiplier(eff, &q, &sh)) sh = 127;       /* refused below */
#else
        (void)in;
        (void)out;
        (void)per_tensor_product;
#endif
        q = fm_pre_value(it, q);
        sh = fm_pre_value(it, sh);
        if (sh > 30 || sh < -31)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "quantization scales out of range", opi, -1, c);
        (*mult)[c] = q;
        (*shift)[c] = (int8_t)sh;
    }
    return FM_OK;
}

fm_status fm_channel_offsets(fm_interp *it, const fm_tensor *w, const int32_t *bias,
                             int32_t in_off, int32_t channels, int32_t rows, int32_t row_len,
                             int32_t **acc0)
{
    const int8_t *v = (const int8_t *)w->cdata;
    int32_t c;
    *acc0 = (int32_t *)fm_state_alloc(it, 4u * (uint32_t)channels);
    if (!*acc0) return FM_ERR_MEMORY;
    for (c = 0; c < channels; c++) {
        uint32_t j, e;
        int32_t sum = 0;
        if (w->flags & FM_T_SPARSE) {
            j = fm_seg(w, (uint32_t)(c * rows));
            e = fm_seg(w, (uint32_t)((c + 1) * rows));
        } else {
            j = (uint32_t)(c * rows * row_len);
            e = j + (uint32_t)(rows * row_len);
        }
        /* 16-bit partial sums of at most 256 weights (|sum| <= 32,768: no overflow), then into
         * the 32-bit sum: a 32-bit add per weight cost the MSP430 about twice as much */
        while (j < e) {
            const int8_t *q = v + j, *stop = v + (e - j > 256u ? j + 256u : e);
            int16_t part = 0;
            for (; q < stop; q++) part = (int16_t)(part + *q);
            sum += part;
            j = (uint32_t)(stop - v);
        }
        (*acc0)[c] = FM_WRAP_ADD(bias ? bias[c] : 0, FM_MUL32(in_off, sum));
    }
    return FM_OK;
}

fm_status fm_window(fm_interp *it, uint16_t opi, int32_t padding, int32_t in, int32_t k,
                    int32_t stride, int32_t dil, int32_t out, int32_t *pad)
{
    int32_t eff, want, total;
    if (stride < 1 || dil < 1 || k < 1 || stride > 1024 || dil > 1024)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "stride, dilation or window out of range", opi, -1, stride);
    eff = (k - 1) * dil + 1;
    if (padding == 0) want = (in + stride - 1) / stride;           /* SAME */
    else if (padding == 1) want = (in + stride - eff) / stride;     /* VALID */
    else return fm_fail(it, FM_ERR_UNSUPPORTED, "padding type", opi, -1, padding);
    if (want < 1 || want != out)
        return fm_fail(it, FM_ERR_FORMAT, "output size does not match the window", opi, -1, out);
    total = (out - 1) * stride + eff - in;
    *pad = total > 0 ? total / 2 : 0;
    if (*pad >= eff)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "padding larger than the window", opi, -1, *pad);
    return FM_OK;
}


fm_status fm_broadcast(fm_interp *it, uint16_t opi, const fm_tensor *a, const fm_tensor *b,
                       const fm_tensor *out, int32_t *out_dims, int32_t *str1, int32_t *str2)
{
    int32_t d, la, lb, lo, sa = 1, sb = 1;
    if (a->ndim > 4 || b->ndim > 4 || out->ndim > 4)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "element-wise operator of more than 4 dimensions", opi, -1, 0);
    la = 4 - a->ndim;
    lb = 4 - b->ndim;
    lo = 4 - out->ndim;
    for (d = 3; d >= 0; d--) {
        const int32_t da = d < la ? 1 : a->dims[d - la], db = d < lb ? 1 : b->dims[d - lb];
        const int32_t dout = d < lo ? 1 : out->dims[d - lo];
        if ((da != dout && da != 1) || (db != dout && db != 1) || (da != dout && db != dout))
            return fm_fail(it, FM_ERR_FORMAT, "operand shapes do not broadcast to the output", opi, -1, d);
        out_dims[d] = dout;
        str1[d] = da == 1 ? 0 : sa;
        str2[d] = db == 1 ? 0 : sb;
        sa *= da;
        sb *= db;
    }
    return FM_OK;
}

void fm_bcast_start(const fm_add_params *p, uint32_t u, fm_bcast_pos *pos)
{
    int32_t rest = (int32_t)u, d;
    pos->ia = pos->ib = 0;
    for (d = 3; d >= 0; d--) {
        pos->c[d] = rest % p->out_dims[d];
        rest /= p->out_dims[d];
        pos->ia += pos->c[d] * p->str1[d];
        pos->ib += pos->c[d] * p->str2[d];
    }
}

fm_status fm_options_activation(fm_interp *it, uint16_t opi, const fm_op *op, const fm_tensor *out,
                                int32_t *mn, int32_t *mx)
{
    fm_fb fb;
    int32_t act;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    act = fb_i8(&fb, op->opts, 0, 0);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad operator options", opi, -1, 0);
    return fm_activation_range(it, opi, act, out, mn, mx);
}

fm_status fm_const_i32(fm_interp *it, uint16_t opi, int16_t t, int32_t n, const int32_t **v)
{
    const fm_tensor *x;
    if (t < 0 || t >= (int16_t)it->num_tensors)
        return fm_fail(it, FM_ERR_FORMAT, "operator input missing", opi, t, 0);
    x = &it->tensors[t];
    if (x->type != FM_INT32 || !(x->flags & FM_T_CONST) || (x->flags & FM_T_SPARSE))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "operand must be a constant int32 tensor", opi, t, x->type);
    if (fm_elements(x) != n)
        return fm_fail(it, FM_ERR_FORMAT, "constant operand has the wrong size", opi, t, fm_elements(x));
    *v = (const int32_t *)(const void *)x->cdata;
    return FM_OK;
}

void fm_copy_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_copy_params *p = &op->p.copy;
    const uint8_t *in = fm_data(it, op->in[0]);
    uint8_t *out = fm_data(it, op->out);
    const uint32_t es = p->elem, n = (uint32_t)p->dims[3];
    uint32_t u;
    for (u = begin; u < end; u++) {
        /* row u of the output: indices along dimensions 0..2 */
        const int32_t i2 = (int32_t)u % p->dims[2], r = (int32_t)u / p->dims[2];
        const int32_t i1 = r % p->dims[1], i0 = r / p->dims[1];
        int32_t at = p->start[0] + i0 * p->step[0] + p->start[1] + i1 * p->step[1] + p->start[2] +
                     i2 * p->step[2] + p->start[3];
        uint8_t *o = out + u * n * es;
        uint32_t k;
        if (es == 1) {
            for (k = 0; k < n; k++, at += p->step[3]) o[k] = in[at];
        } else {
            for (k = 0; k < n; k++, at += p->step[3]) memcpy(o + k * es, in + (uint32_t)at * es, es);
        }
    }
}

#define FM_STATE_READY 0x52415646ul    /* "FVAR", mixed with the model's length and id */

uint32_t fm_state_ready(const fm_interp *it)
{
    return FM_STATE_READY ^ it->model_len ^ it->model_id;
}

volatile uint32_t *fm_state_word(const fm_interp *it, const fm_tensor *t)
{
    return (volatile uint32_t *)(void *)(it->arena + t->offset + FM_ALIGN4(t->bytes));
}

fm_status fm_q427_input(fm_interp *it, uint16_t opi, fm_op *op, const fm_tensor *in, const fm_tensor *out)
{
    fm_logistic_params *p = &op->p.logistic;
    int32_t q = 0, sh = 0, radius = 0;
    if (fm_elements(in) != fm_elements(out)) return fm_fail(it, FM_ERR_FORMAT, "input and output sizes differ", opi, -1, 0);
#if FM_PREPARE_FLOAT
    {
        /* input scale * 2^27 = q * 2^(sh - 31); radius = floor(15 * 2^27 / 2^sh) */
        double r = 15.0 * 134217728.0;
        int32_t k;
        if (!(in->scale > 0) || !fm_quantize_multiplier((double)in->scale * 134217728.0, &q, &sh) ||
            sh < 0 || sh > 62) {
            sh = -1;                                                      /* refused below */
        } else {
            for (k = 0; k < sh; k++) r *= 0.5;
            radius = r >= 2147483647.0 ? -1 : (int32_t)r;
        }
    }
#endif
    p->mult = fm_pre_value(it, q);
    p->shift = fm_pre_value(it, sh);
    p->radius = fm_pre_value(it, radius);
    if (p->shift < 0 || p->shift > 31 || p->mult <= 0 || p->radius < 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "input scale out of range", opi, op->in[0], p->shift);
    p->in_zp = in->zero_point;
    p->count = fm_elements(out);
    op->units = (uint32_t)p->count;
    return FM_OK;
}

void fm_q427_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end,
                  int32_t (*f)(int32_t, int32_t), int32_t exponent, int32_t offset)
{
    const fm_logistic_params *p = &op->p.logistic;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t x = (int32_t)in[u] - p->in_zp;
        int32_t v;
        if (x <= -p->radius) {
            v = -128;
        } else if (x >= p->radius) {
            v = 127;
        } else {
            v = fm_rdbpot(f(fm_mul_by_qm(x, p->mult, p->shift), 4), exponent) + offset;
            v = v < -128 ? -128 : v > 127 ? 127 : v;
        }
        out[u] = (int8_t)v;
    }
}
