/* CONV_2D, int8 with per-channel quantization; dense weights or CSR weights read in place. */
#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"
#include "freeml/fm_mac_dsp.h"
#ifdef FM_TARGET_DOT
#include "fm_dot.h"   /* the target's int8 MAC loop (tflm_port/targets): SMLAD, MACS */
#endif

/* CSR weights: on cores without SIMD (the MSP430, a Cortex-M without the DSP extension) the
 * sparse kernel reads the input in place, FM_GATHER_COLS output columns per pass over a
 * channel's CSR row (FM_SPARSE_GATHER 1); on hosts and the Cortex-M4 it transposes the input
 * rows into a scratch and runs each non-zero weight over a tile of columns (vectorized by the
 * compiler; on the M4 four columns from one word, fm_conv_csr_row_dsp). */
#ifndef FM_SPARSE_GATHER
#if defined(FM_TARGET_DOT) && !FM_MAC_DSP
#define FM_SPARSE_GATHER 1
#else
#define FM_SPARSE_GATHER 0
#endif
#endif
#if FM_SPARSE_GATHER && defined(__MSP430__) && defined(FM_MSP430_HWMULT) && FM_MSP430_HWMULT
#include "hwmult.h"   /* the multiplier's registers: operand 1 kept, OP2 written per product */
#define FM_SPARSE_HWMULT 1
#else
#define FM_SPARSE_HWMULT 0
#endif

#if !FM_SPARSE_GATHER
static int32_t padded_width(const fm_conv_params *p);
#endif

/* Which of the weight layouts this build has (fm_internal.h, per-model kernel configuration). */
#define FM_CONV_ANY_SPARSE (FM_CONV_SPARSE_8 || FM_CONV_SPARSE_16 || FM_CONV_SPARSE_32)
static uint32_t gather_scratch(const fm_conv_params *p);
#if FM_SPARSE_GATHER
typedef void (*sparse_row_fn)(const fm_conv_params *, const fm_tensor *, const int8_t *, const int32_t *,
                              int32_t, int8_t *, void *);
#else
typedef void (*sparse_row_fn)(const fm_conv_params *, const fm_tensor *, const int8_t *, int32_t,
                              int8_t *);
#endif
static sparse_row_fn sparse_row(const fm_tensor *w);

static fm_status prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_conv_params *p = &op->p.conv;
    const fm_tensor *in, *f, *fd, *out, *bias;
    fm_fb fb;
    int32_t padding, act;
    fm_status s;
    if ((s = fm_weighted_operands(it, opi, op, &in, &f, &fd, &out, &bias)) != FM_OK) return s;
    if (in->ndim != 4 || f->ndim != 4 || out->ndim != 4)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "CONV_2D tensors must be 4-D", opi, -1, 0);
    p->in_h = in->dims[1]; p->in_w = in->dims[2]; p->in_c = in->dims[3];
    p->out_c = f->dims[0]; p->k_h = f->dims[1]; p->k_w = f->dims[2]; p->k_c = f->dims[3];
    p->out_h = out->dims[1]; p->out_w = out->dims[2];
    if (p->k_c != p->in_c || out->dims[3] != p->out_c || out->dims[0] != in->dims[0])
        return fm_fail(it, FM_ERR_UNSUPPORTED, "CONV_2D shapes do not match (grouped convolution?)", opi, -1, 0);
    if ((s = fm_check_bias(it, opi, op, bias, p->out_c)) != FM_OK) return s;
    fb.buf = it->model; fb.len = it->model_len; fb.err = 0; fb.err_pos = 0;
    padding = fb_i8(&fb, op->opts, 0, 0);
    p->stride_w = fb_i32(&fb, op->opts, 1, 0);
    p->stride_h = fb_i32(&fb, op->opts, 2, 0);
    act = fb_i8(&fb, op->opts, 3, 0);
    p->dil_w = fb_i32(&fb, op->opts, 4, 1);
    p->dil_h = fb_i32(&fb, op->opts, 5, 1);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad CONV_2D options", opi, -1, 0);
    if ((s = fm_window(it, opi, padding, p->in_h, p->k_h, p->stride_h, p->dil_h, p->out_h, &p->pad_h)) != FM_OK) return s;
    if ((s = fm_window(it, opi, padding, p->in_w, p->k_w, p->stride_w, p->dil_w, p->out_w, &p->pad_w)) != FM_OK) return s;
    if ((s = fm_activation_range(it, opi, act, out, &p->out.min, &p->out.max)) != FM_OK) return s;
    p->in_off = -in->zero_point;
    p->out.off = out->zero_point;
    s = fm_conv_multipliers(it, opi, in, f->num_scales ? f : fd, out, p->out_c, 0, &p->mult, &p->shift);
    if (s) return s;
    s = fm_channel_offsets(it, fd, bias ? (const int32_t *)(const void *)bias->cdata : NULL, p->in_off,
                           p->out_c, p->k_h * p->k_w, p->k_c, &p->acc0);
    if (s) return s;
    if ((fd->flags & FM_T_SPARSE) && !sparse_row(fd))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "CONV_2D: this build has no kernel for this CSR index "
                       "width (value: index bytes; see the kernel configuration)", opi, op->in[1], fd->idx_w);
    if (!(fd->flags & FM_T_SPARSE) && !FM_CONV_DENSE)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "CONV_2D: this build has no kernel for dense weights "
                       "(see the kernel configuration)", opi, op->in[1], 0);
#if FM_SPARSE_GATHER
    if (fd->flags & FM_T_SPARSE) op->scratch_bytes = gather_scratch(p);   /* per tap and weight: offset */
#else
    if (fd->flags & FM_T_SPARSE) {
        /* sparse path: the input rows of one output row, zero-point padded and transposed; at
         * least the gather kernel's scratch (with this host's wider pointers), so that the arena
         * planned here holds a target build's too (the target programs are sized from it) */
        const uint32_t rows = (uint32_t)p->k_c * (uint32_t)p->k_h * (uint32_t)padded_width(p);
        op->scratch_bytes = rows > gather_scratch(p) ? rows : gather_scratch(p);
    }
#endif
    op->units = (uint32_t)in->dims[0] * (uint32_t)p->out_h;
    return FM_OK;
}

/* Scratch of the gather kernel: the input offset of each tap, then of each weight of one output
 * channel (at most taps x input channels). */
static uint32_t gather_scratch(const fm_conv_params *p)
{
    return ((uint32_t)p->k_h * (uint32_t)p->k_w * (1u + (uint32_t)p->k_c)) * (uint32_t)sizeof(ptrdiff_t);
}

/* CSR segment offset r (read once per output channel and tap, outside the inner loop). */
#define FM_SEG(r) (segw == 1 ? (uint32_t)seg[r] : segw == 2 ? (uint32_t)((const uint16_t *)(const void *)seg)[r] \
                                                       : ((const uint32_t *)(const void *)seg)[r])

#if FM_SPARSE_GATHER
/* Sparse convolution of one output row, input read in place. Per output channel the input
 * offset of each of its non-zero weights (tap offset + input channel) is computed once into the
 * scratch and serves every column of the row: per weight and column one load of the weight, one
 * of its offset and one of the input, no per-tap work. Where the window lies inside the image
 * each non-zero weight is read once for FM_GATHER_COLS columns (the last group of a row overlaps
 * the one before rather than leaving single columns), on the MSP430 one column at a time into
 * the multiplier's own accumulator (MACS = w, OP2 = x); the input offset is folded into acc0
 * (w * x exact in int16: |w * x| <= 2^14). A window across the border takes the taps inside
 * only, the input offset added to each input. One copy per index type. */
#define FM_GATHER_COLS (FM_SPARSE_HWMULT ? 1 : 4)

#if FM_SPARSE_HWMULT
/* sum of the channel's weights times their inputs from xw, in the multiplier's accumulator */
#define FM_GATHER_DOT(ACC)                                                                        \
    do {                                                                                          \
        const int8_t *vp = v + j0;                                                                \
        const ptrdiff_t *po = nzoff;                                                              \
        FM_RESLO = 0;                                                                             \
        FM_RESHI = 0;                                                                             \
        while (po < pe) {                                                                         \
            FM_MACS = (uint16_t)(int16_t)*vp++;                                                   \
            FM_OP2 = (uint16_t)(int16_t)xw[*po++];                                                \
        }                                                                                         \
        ACC = (int32_t)(((uint32_t)FM_RESHI << 16) | FM_RESLO);                                   \
    } while (0)
#else
#define FM_GATHER_DOT(ACC)                                                                        \
    do {                                                                                          \
        const int8_t *vp = v + j0;                                                                \
        const ptrdiff_t *po = nzoff;                                                              \
        ACC = 0;                                                                                  \
        while (po < pe) ACC += (int16_t)(*vp++ * xw[*po++]);                                      \
    } while (0)
#endif

/* four columns from X (xs bytes apart) into O[0], O[out_c], O[2 out_c], O[3 out_c] */
#define FM_GATHER_FOUR(X, O)                                                                      \
    do {                                                                                          \
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                                   \
        const int8_t *vp = v + j0;                                                                \
        const ptrdiff_t *po = nzoff;                                                              \
        const int8_t *const x0 = (X);                                                             \
        while (po < pe) {                                                                         \
            const int8_t *q = x0 + *po++;                                                         \
            const int16_t wv = *vp++;                                                             \
            a0 += (int16_t)(wv * q[0]);                                                           \
            a1 += (int16_t)(wv * q[xs]);                                                          \
            q += xs;                                                                              \
            a2 += (int16_t)(wv * q[xs]);                                                          \
            a3 += (int16_t)(wv * q[xs2]);                                                         \
        }                                                                                         \
        (O)[0] = fm_requant_s8(FM_WRAP_ADD(a0, acc0), &p->out, shift, mult);                      \
        (O)[out_c] = fm_requant_s8(FM_WRAP_ADD(a1, acc0), &p->out, shift, mult);                  \
        (O)[2 * out_c] = fm_requant_s8(FM_WRAP_ADD(a2, acc0), &p->out, shift, mult);              \
        (O)[3 * out_c] = fm_requant_s8(FM_WRAP_ADD(a3, acc0), &p->out, shift, mult);              \
    } while (0)

#define FM_CONV_SPARSE_ROW(NAME, IDX_T)                                                           \
    static void NAME(const fm_conv_params *p, const fm_tensor *w, const int8_t *img,                 \
                     const int32_t *bias, int32_t oy, int8_t *out, void *scratch)                    \
    {                                                                                                \
        const int8_t *v = (const int8_t *)w->cdata;                                                  \
        const uint8_t *seg = w->seg, segw = w->seg_w;                                                \
        const IDX_T *idx = (const IDX_T *)(const void *)w->idx;                                      \
        const fm_count kh = (fm_count)p->k_h, kw = (fm_count)p->k_w, taps = kh * kw;                 \
        const fm_count out_c = (fm_count)p->out_c, ow = (fm_count)p->out_w;                          \
        const int32_t kc = p->k_c, span_w = (p->k_w - 1) * p->dil_w;                                 \
        const ptrdiff_t xs = (ptrdiff_t)p->stride_w * kc;          /* between output columns */      \
        const ptrdiff_t xs2 = 2 * xs;                                                                \
        const int32_t iy0 = oy * p->stride_h - p->pad_h;                                             \
        const int rows_in = iy0 >= 0 && iy0 + (p->k_h - 1) * p->dil_h < p->in_h;                     \
        const int8_t *win = img + (ptrdiff_t)(iy0 * p->in_w - p->pad_w) * kc; /* column 0 */         \
        ptrdiff_t *off = (ptrdiff_t *)scratch, *const nzoff = off + taps;                            \
        fm_count lo, hi, ox, oc, t, ky, kx;                                                          \
        size_t r = 0;                                                /* CSR row (oc, ky, kx) */      \
        (void)xs2;                                                                                   \
        {   /* input offset of each tap, pointer steps only */                                       \
            const ptrdiff_t row = (ptrdiff_t)p->dil_h * p->in_w * kc, tap = (ptrdiff_t)p->dil_w * kc;  \
            ptrdiff_t ro = 0;                                                                        \
            for (ky = 0, t = 0; ky < kh; ky++, ro += row) {                                          \
                ptrdiff_t xo = ro;                                                                   \
                for (kx = 0; kx < kw; kx++, xo += tap) off[t++] = xo;                                \
            }                                                                                        \
        }                                                                                            \
        /* columns [lo, hi) have their whole window inside the image */                             \
        lo = (fm_count)((p->pad_w + p->stride_w - 1) / p->stride_w);                                 \
        hi = (fm_count)(p->in_w - span_w + p->pad_w <= 0 ? 0                                         \
                        : (p->in_w - span_w + p->pad_w - 1) / p->stride_w + 1);                      \
        if (hi > ow) hi = ow;                                                                        \
        if (!rows_in || lo > hi) lo = hi = 0;                                                        \
        for (oc = 0; oc < out_c; oc++) {                                                             \
            const size_t j0 = FM_SEG(r), r0 = r;                                                     \
            const int32_t acc0 = p->acc0[oc], b0 = bias ? bias[oc] : 0;                              \
            const int16_t shift = p->shift[oc];                                                      \
            const int32_t mult = p->mult[oc];                                                        \
            const ptrdiff_t *pe;                                                                     \
            {   /* the input offset of each of the channel's non-zero weights */                     \
                ptrdiff_t *po = nzoff;                                                               \
                size_t j = j0;                                                                       \
                for (t = 0; t < taps; t++) {                                                         \
                    const size_t e = FM_SEG(++r);                                                    \
                    const ptrdiff_t ot = off[t];                                                     \
                    for (; j < e; j++) *po++ = ot + (ptrdiff_t)idx[j];                               \
                }                                                                                    \
                pe = po;                                                                             \
            }                                                                                        \
            const int8_t *xw = win;                                                                  \
            int8_t *o = out + oc;                                                                    \
            for (ox = 0; ox < ow; ox++, xw += xs, o += out_c) {                                      \
                int32_t a;                                                                           \
                if (ox >= lo && ox < hi) {                                                           \
                    if (FM_GATHER_COLS == 4 && hi - lo >= 4) {                                       \
                        /* columns [s, s + 4): the last group of the row overlaps the one before */  \
                        const fm_count s = ox + 4 <= hi ? ox : hi - 4, n = s + 3 - ox;               \
                        FM_GATHER_FOUR(xw - (ptrdiff_t)(ox - s) * xs, o - (ptrdiff_t)(ox - s) * out_c); \
                        ox += n;                                                                     \
                        xw += (ptrdiff_t)n * xs;                                                     \
                        o += (ptrdiff_t)n * out_c;                                                   \
                        continue;                                                                    \
                    }                                                                                \
                    FM_GATHER_DOT(a);                                                                \
                    a = FM_WRAP_ADD(a, acc0);                                                        \
                } else {    /* across the border: the taps inside, the input offset added */         \
                    const int32_t ix0 = (int32_t)ox * p->stride_w - p->pad_w;                        \
                    size_t j = j0, rr = r0;                                                          \
                    a = 0;                                                                           \
                    for (ky = 0, t = 0; ky < kh; ky++) {                                             \
                        const int32_t iy = iy0 + (int32_t)ky * p->dil_h;                             \
                        for (kx = 0; kx < kw; kx++, t++) {                                           \
                            const int32_t ix = ix0 + (int32_t)kx * p->dil_w;                         \
                            const size_t e = FM_SEG(++rr);                                           \
                            if (iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w) {                \
                                const int8_t *xp = xw + off[t];                                      \
                                for (; j < e; j++) a += (int32_t)v[j] * ((int32_t)xp[idx[j]] + p->in_off); \
                            }                                                                        \
                            j = e;                                                                   \
                        }                                                                            \
                    }                                                                                \
                    a = FM_WRAP_ADD(a, b0);                                                          \
                }                                                                                    \
                *o = fm_requant_s8(a, &p->out, shift, mult);                                         \
            }                                                                                        \
        }                                                                                            \
    }
#else
/* Sparse convolution of one output row. The input rows are first copied, transposed to
 * [channel][filter row][padded column] with padding set to the input zero point (so that padded
 * taps add w * (zp - zp) = 0 with the input offset folded into acc0). Then, for a tile of
 * FM_TILE output columns, each non-zero weight w of output channel oc, tap (ky, kx), input
 * channel c adds w * x to FM_TILE accumulators from one run of the transposed input: a short
 * fixed-length loop that compilers keep in vector registers, instead of a gather per MAC.
 * One copy per index type (segment offsets are read once per tap, whatever their width). */
#define FM_TILE 8
/* Columns a tile computes: all FM_TILE (a fixed-length loop that hosts and the M4 keep in vector
 * registers), or on 16-bit targets only the n that exist (no vector unit: the padding columns
 * would cost as much as real ones). */
#define FM_TILE_LEN(n) (UINTPTR_MAX <= 0xFFFFu ? (n) : FM_TILE)

/* Columns of the transposed input rows: enough for whole tiles (the tail reads padding). */
static int32_t padded_width(const fm_conv_params *p)
{
    const int32_t tiles = (p->out_w + FM_TILE - 1) / FM_TILE;
    return (tiles * FM_TILE - 1) * p->stride_w + (p->k_w - 1) * p->dil_w + 1;
}


#define FM_CONV_SPARSE_ROW(NAME, IDX_T)                                                    \
    static void NAME(const fm_conv_params *p, const fm_tensor *w, const int8_t *t, int32_t pw,   \
                     int8_t *o)                                                                   \
    {                                                                                             \
        const int8_t *v = (const int8_t *)w->cdata;                                               \
        const uint8_t *seg = w->seg, segw = w->seg_w;                                             \
        const IDX_T *idx = (const IDX_T *)(const void *)w->idx;                                   \
        const int32_t kh = p->k_h, kw = p->k_w, ow = p->out_w, sw = p->stride_w, dw = p->dil_w;  \
        const size_t plane = (size_t)(kh * pw);   /* an offset in the scratch: size_t products */ \
        fm_count oc, ox0, i, ky, kx;                                                              \
        for (ox0 = 0; ox0 < ow; ox0 += FM_TILE) {                                                 \
            const int8_t *tt = t + ox0 * sw;                                                      \
            const fm_count n = ow - ox0 < FM_TILE ? (fm_count)(ow - ox0) : FM_TILE;               \
            const fm_count nt = FM_TILE_LEN(n);                                                   \
            size_t r = 0;                                     /* CSR row: (oc, ky, kx) */         \
            for (oc = 0; oc < p->out_c; oc++) {                                                   \
                int32_t acc[FM_TILE];                                                             \
                size_t j = FM_SEG(r);                                                             \
                const int8_t *brow = tt;                          /* filter row ky */             \
                for (i = 0; i < FM_TILE; i++) acc[i] = 0;                                         \
                for (ky = 0; ky < kh; ky++, brow += pw) {                                         \
                    const int8_t *base = brow;                    /* tap (ky, kx) */              \
                    for (kx = 0; kx < kw; kx++, r++, base += dw) {                                \
                        const size_t e = FM_SEG(r + 1);                                           \
                        for (; j < e; j++) {                                                      \
                            /* |w * x| <= 2^14: exact in int16 (a cheap SIMD multiply) */         \
                            const int16_t wv = v[j];                                              \
                            const int8_t *xp = base + (size_t)idx[j] * plane;                     \
                            if (sw == 1)                                                          \
                                for (i = 0; i < nt; i++) acc[i] += (int16_t)(wv * xp[i]);         \
                            else                                                                  \
                                for (i = 0; i < nt; i++) acc[i] += (int16_t)(wv * xp[i * sw]);    \
                        }                                                                         \
                    }                                                                             \
                }                                                                                 \
                for (i = 0; i < n; i++) {                                                         \
                    o[(ox0 + i) * p->out_c + oc] = fm_requant_s8(FM_WRAP_ADD(acc[i], p->acc0[oc]),   \
                                                                 &p->out, p->shift[oc], p->mult[oc]);  \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }

#endif

/* Only the index widths the build configuration asks for; NULL for the others. */
#if FM_CONV_SPARSE_8
FM_CONV_SPARSE_ROW(sp_8, uint8_t)
#else
#define sp_8 ((sparse_row_fn)0)
#endif
#if FM_CONV_SPARSE_16
FM_CONV_SPARSE_ROW(sp_16, uint16_t)
#else
#define sp_16 ((sparse_row_fn)0)
#endif
#if FM_CONV_SPARSE_32
FM_CONV_SPARSE_ROW(sp_32, uint32_t)
#else
#define sp_32 ((sparse_row_fn)0)
#endif

static sparse_row_fn sparse_row(const fm_tensor *w)
{
    return w->idx_w == 1 ? sp_8 : w->idx_w == 2 ? sp_16 : sp_32;
}

#if FM_CONV_ANY_SPARSE && FM_SPARSE_GATHER
static void eval_sparse(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_conv_params *p = &op->p.conv;
    const fm_tensor *w = fm_root(it, op->in[1]);
    const sparse_row_fn fn = sparse_row(w);      /* not NULL: prepare checked */
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    const int32_t *bias = op->num_in > 2 && op->in[2] >= 0 ? (const int32_t *)(const void *)fm_data(it, op->in[2]) : NULL;
    int8_t *out = (int8_t *)fm_data(it, op->out);
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t n = (int32_t)(u / (uint32_t)p->out_h), oy = (int32_t)(u % (uint32_t)p->out_h);
        fn(p, w, in + n * p->in_h * p->in_w * p->in_c, bias, oy, out + (int32_t)u * p->out_w * p->out_c,
           it->arena + op->scratch_off);
    }
}
#elif FM_CONV_ANY_SPARSE
static void eval_sparse(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_conv_params *p = &op->p.conv;
    const fm_tensor *w = fm_root(it, op->in[1]);
    const sparse_row_fn fn = sparse_row(w);      /* not NULL: prepare checked */
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    int8_t *out = (int8_t *)fm_data(it, op->out);
    int8_t *t = (int8_t *)(it->arena + op->scratch_off);
    const int32_t pw = padded_width(p);
    const fm_count kc = (fm_count)p->k_c, kh = (fm_count)p->k_h;
    const int32_t zp = -p->in_off;
    const ptrdiff_t plane = (ptrdiff_t)kh * pw;
#if FM_MAC_DSP
    const int dsp = fm_conv_csr_row_dsp_fits(p, w, pw);   /* the M4's row: 4 columns per word */
    /* the columns its groups of 4 read (at least 4 outputs' windows): the rest of the padded
     * width stays unwritten */
    const int32_t need = (p->out_w < 4 ? 4 : p->out_w) + (p->k_w - 1) * p->dil_w;
    const fm_count tw = (fm_count)(dsp && need < pw ? need : pw);
#else
    const fm_count tw = (fm_count)pw;                      /* columns written */
#endif
    uint32_t u;
    for (u = begin; u < end; u++) {
        const int32_t n = (int32_t)(u / (uint32_t)p->out_h), oy = (int32_t)(u % (uint32_t)p->out_h);
        const int8_t *img = in + n * p->in_h * p->in_w * kc;
        fm_count ky, px, c;
        for (ky = 0; ky < kh; ky++) {
            const int32_t iy = oy * p->stride_h - p->pad_h + ky * p->dil_h;
            const int row_in = iy >= 0 && iy < p->in_h;
            /* columns [lo, hi) inside the input, the zero point elsewhere; per channel its row of
             * the scratch, pointer steps only (index products are helper calls on 16-bit targets) */
            const fm_count lo = row_in ? (fm_count)(p->pad_w < tw ? p->pad_w : tw) : tw;
            const fm_count hi = row_in ? (fm_count)(p->pad_w + p->in_w < tw ? p->pad_w + p->in_w : tw) : tw;
            const int8_t *x0 = row_in ? img + ((ptrdiff_t)iy * p->in_w + (lo - p->pad_w)) * kc : img;
            int8_t *d = t + ky * pw;
            for (c = 0; c < kc; c++, d += plane, x0++) {
                const int8_t *x = x0;
                for (px = 0; px < lo; px++) d[px] = (int8_t)zp;
                for (; px < hi; px++, x += kc) d[px] = *x;
                for (; px < tw; px++) d[px] = (int8_t)zp;
            }
        }
#if FM_MAC_DSP
        if (dsp) {
            fm_conv_csr_row_dsp(p, w, t, pw, out + (int32_t)u * p->out_w * p->out_c);
            continue;
        }
#endif
        fn(p, w, t, pw, out + (int32_t)u * p->out_w * p->out_c);
    }
}
#endif

#if FM_CONV_DENSE
/* sum (x[i] + off) * w[i]: the target's MAC loop (SMLAD / hardware multiplier) for long enough
 * runs, else plain C. */
static inline int32_t dot(const int8_t *w, const int8_t *x, int32_t n, int32_t off)
{
    int32_t acc = 0, i;
#ifdef FM_TARGET_DOT
#if FM_TARGET_DOT_ALWAYS
    return fm_dot_s8(x, w, (uint16_t)n, (int16_t)off, 0);
#endif
    if (n >= FM_TARGET_DOT_MIN && n < 32768) return fm_dot_s8(x, w, (uint16_t)n, (int16_t)off, 0);
#endif
    for (i = 0; i < n; i++) acc += FM_MAC16(w[i], x[i] + off);
    return acc;
}

/* A whole filter window inside the image: `rows` filter rows of n contiguous values against
 * input rows `step` bytes apart (on the MSP430 one multiplier accumulator for all of them). */
static inline int32_t dot_rows(const int8_t *w, const int8_t *x, ptrdiff_t step, int32_t n, int32_t rows)
{
    int32_t acc = 0, i;
#ifdef FM_TARGET_DOT
#if FM_TARGET_DOT_ALWAYS
    return fm_dot_s8_rows(x, step, w, (uint16_t)n, (uint16_t)rows, 0, 0);
#endif
    if (n >= FM_TARGET_DOT_MIN && n < 32768 && rows < 32768)
        return fm_dot_s8_rows(x, step, w, (uint16_t)n, (uint16_t)rows, 0, 0);
#endif
    for (; rows > 0; rows--, x += step)
        for (i = 0; i < n; i++) acc += FM_MAC16(*w++, x[i]);
    return acc;
}

static void eval_dense(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const fm_conv_params *p = &op->p.conv;
    const int8_t *in = (const int8_t *)fm_data(it, op->in[0]);
    const int8_t *filt = (const int8_t *)fm_root(it, op->in[1])->cdata;
    const int32_t *bias = op->num_in > 2 && op->in[2] >= 0 ? (const int32_t *)(const void *)fm_data(it, op->in[2]) : NULL;
    int8_t *out = (int8_t *)fm_data(it, op->out);
    const int32_t kc = p->k_c, kh = p->k_h, kw = p->k_w, row_len = kw * kc, window = kh * row_len;
    const int32_t span_h = (kh - 1) * p->dil_h, span_w = (kw - 1) * p->dil_w;
    const fm_count out_c = (fm_count)p->out_c, out_w = (fm_count)p->out_w;
    const ptrdiff_t x_step = (ptrdiff_t)p->stride_w * kc;         /* input bytes between outputs */
    const ptrdiff_t row_step = (ptrdiff_t)p->dil_h * p->in_w * kc;  /* ... between filter rows */
    uint32_t u;
#ifdef FM_PX_HWMULT
    /* MSP430: the short windows inside the input, all output channels of a pixel in one call */
    fm_px_hwmult_t px;
    px.acc0 = p->acc0; px.mult = p->mult; px.shift = p->shift; px.out = &p->out;
    px.row_skip = (int16_t)(row_step - row_len); px.row_len = (uint16_t)row_len; px.rows = (uint16_t)kh;
    px.x_off = 0;
#endif
#if FM_MAC_DSP
    if (kh == 1 && kw == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 && p->pad_w == 0 &&
        kc <= 0xFFFF) {
        /* 1x1: the output pixels of rows [begin, end) are those of one flat run, two at a time */
        const int32_t first = (int32_t)begin * p->out_w, last = (int32_t)end * p->out_w;
        int32_t px;
        for (px = first; px < last; px += 2) {
            const int pair = px + 1 < last;
            fm_conv_pair_dsp(p, filt, in + px * kc, pair ? kc : 0, 0, (uint16_t)kc, 1, out + px * (int32_t)out_c,
                             pair ? (ptrdiff_t)out_c : 0);
        }
        return;
    }
#endif
    /* output row u = (image n, row oy), stepped from `begin`: no division or index product per
     * row (on 16-bit targets each is a helper call of hundreds of cycles) */
    /* input bytes between output rows (a filter row's step when stride and dilation are equal:
     * few products per call, which a step that resumes pays again) */
    const ptrdiff_t win_step = p->stride_h == p->dil_h ? row_step : (ptrdiff_t)p->stride_h * p->in_w * kc;
    const int8_t *img = in;
    int32_t oy = (int32_t)begin;
    int8_t *o = out + ((int32_t)begin * p->out_w) * out_c;     /* stepped, one value at a time */
    for (; oy >= p->out_h; oy -= p->out_h) img += (ptrdiff_t)p->in_h * p->in_w * kc;   /* (no division) */
    int32_t iy0 = oy * p->stride_h - p->pad_h;
    /* offset of the first input byte of the window of column 0 of the row */
    ptrdiff_t win0 = (ptrdiff_t)(iy0 * p->in_w - p->pad_w) * kc;
    for (u = begin; u < end; u++, oy++, iy0 += p->stride_h, win0 += win_step) {
        int rows_inside;
        int32_t ix0 = -p->pad_w;
        ptrdiff_t win;          /* offset of the window of column ox (used where it is inside) */
        fm_count ox;
        if (oy == p->out_h) {   /* the next image */
            oy = 0;
            img += (ptrdiff_t)p->in_h * p->in_w * kc;
            iy0 = -p->pad_h;
            win0 = (ptrdiff_t)(iy0 * p->in_w - p->pad_w) * kc;
        }
        rows_inside = iy0 >= 0 && iy0 + span_h < p->in_h;
        win = win0;
        for (ox = 0; ox < out_w; ox++, ix0 += p->stride_w, win += x_step) {
            /* every tap inside the image: the input offset is folded into acc0; at the border
             * only the taps inside count, with the offset added to each input */
            const int inside = rows_inside && ix0 >= 0 && ix0 + span_w < p->in_w;
            const int8_t *k = filt;                            /* filter of channel oc */
            fm_count oc;
#ifdef FM_PX_HWMULT
            if (inside && p->dil_w == 1 && window <= FM_PX_MAX) {
                fm_px_hwmult(img + win, filt, &px, o, (uint16_t)out_c);
                o += out_c;
                continue;
            }
#endif
#if FM_MAC_DSP
            if (inside && p->dil_w == 1 && row_len <= 0xFFFF && kh <= 0xFFFF) {
                /* two output columns per call (this one twice when the next is not inside) */
                const int pair = ox + 1 < out_w && ix0 + p->stride_w + span_w < p->in_w;
                fm_conv_pair_dsp(p, filt, img + win, pair ? x_step : 0, row_step, (uint16_t)row_len,
                                 (uint16_t)kh, o, pair ? (ptrdiff_t)out_c : 0);
                o += out_c;
                if (pair) {     /* the next column is done too */
                    o += out_c;
                    ox++;
                    ix0 += p->stride_w;
                    win += x_step;
                }
                continue;
            }
#endif
            for (oc = 0; oc < out_c; oc++, k += window) {
                int32_t acc = 0, ky, kx;
                if (inside && p->dil_w == 1) {
                    acc = dot_rows(k, img + win, row_step, row_len, kh);
                    acc = FM_WRAP_ADD(acc, p->acc0[oc]);
                } else {
                    const int8_t *kr = k;
                    for (ky = 0; ky < kh; ky++, kr += row_len) {
                        const int32_t iy = iy0 + ky * p->dil_h;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (kx = 0; kx < kw; kx++) {
                            const int32_t ix = ix0 + kx * p->dil_w;
                            if (ix < 0 || ix >= p->in_w) continue;
                            acc += dot(kr + kx * kc, img + (iy * p->in_w + ix) * kc, kc, inside ? 0 : p->in_off);
                        }
                    }
                    acc = FM_WRAP_ADD(acc, inside ? p->acc0[oc] : bias ? bias[oc] : 0);
                }
                *o++ = fm_requant_s8(acc, &p->out, p->shift[oc], p->mult[oc]);
            }
        }
    }
}
#endif

static void eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
#if FM_CONV_ANY_SPARSE
    if (fm_root(it, op->in[1])->flags & FM_T_SPARSE) {
        eval_sparse(it, op, begin, end);
        return;
    }
#endif
#if FM_CONV_DENSE
    eval_dense(it, op, begin, end);
#else
    (void)it; (void)op; (void)begin; (void)end;   /* prepare refused dense weights */
#endif
}

const fm_kernel fm_kernel_conv_2d = {FM_OP_CONV_2D, FM_KERNEL_PREPARE(prepare), FM_KERNEL_EVAL(eval), FM_OP_RECORD(conv)};
