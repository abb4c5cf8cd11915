/* Parsing and validation of a model's subgraph, operator preparation and the arena plan
 * (fm_init, fm_init_subgraph). */
#include <string.h>

#include "freeml/fm_internal.h"
#include "freeml/fm_math.h"

/* Model field ids (TFLite schema). */
enum { MODEL_OPCODES = 1, MODEL_SUBGRAPHS = 2, MODEL_BUFFERS = 4 };
enum { SG_TENSORS = 0, SG_INPUTS = 1, SG_OUTPUTS = 2, SG_OPERATORS = 3 };
enum { T_SHAPE = 0, T_TYPE = 1, T_BUFFER = 2, T_QUANT = 4, T_IS_VARIABLE = 5, T_SPARSITY = 6 };
enum { Q_SCALE = 2, Q_ZERO_POINT = 3, Q_DIM = 6 };
enum { OP_OPCODE = 0, OP_INPUTS = 1, OP_OUTPUTS = 2, OP_OPTIONS = 4 };
enum { OC_DEPRECATED = 0, OC_BUILTIN = 3 };
enum { BUF_DATA = 0, BUF_OFFSET = 1 };
enum { SP_TRAVERSAL = 0, SP_BLOCK_MAP = 1, SP_DIM_META = 2 };
enum { DM_FORMAT = 0, DM_DENSE_SIZE = 1, DM_SEG_TYPE = 2, DM_SEG = 3, DM_IDX_TYPE = 4, DM_IDX = 5 };

#define FM_MAX_TENSORS 4096u
#define FM_MAX_OPS 4096u


#if FM_ERROR_TEXT
static fm_status with_msg(fm_interp *it, const char *msg, fm_status s)
{
    it->err.msg = msg;
    return s;
}
#define format_error(it, fb, msg, op, tensor) \
    with_msg((it), (msg), fm_format_error_at((it), (fb), (int16_t)(op), (int16_t)(tensor)))
#else
#define format_error(it, fb, msg, op, tensor) \
    ((void)(msg), fm_format_error_at((it), (fb), (int16_t)(op), (int16_t)(tensor)))
#endif


/* ---- parsing ------------------------------------------------------------------------------ */

static uint8_t elem_size(uint8_t type)
{
    switch (type) {
    case FM_INT8: case FM_UINT8: return 1;
    case FM_INT16: return 2;
    case FM_INT32: case FM_FLOAT32: return 4;
    case FM_INT64: return 8;
    default: return 0;
    }
}

/* Read a sparse index vector (SparseIndexVector union: 1 int32, 2 uint16, 3 uint8). */
static const uint8_t *index_vector(fm_fb *fb, uint32_t dm, uint16_t type_id, uint16_t id,
                                   uint8_t *width, uint32_t *count)
{
    uint32_t type = fb_u8(fb, dm, type_id, 0), tbl, v;
    uint8_t w = type == 1 ? 4 : type == 2 ? 2 : type == 3 ? 1 : 0;
    *count = 0;
    if (!w) return NULL;
    tbl = fb_table(fb, dm, id);
    if (!tbl) return NULL;
    v = fb_vector(fb, tbl, 0, w, count);
    if (!v || fb->err) return NULL;
    if (((uintptr_t)(fb->buf + v)) % w) return NULL;  /* misaligned: refuse */
    *width = w;
    return fb->buf + v;
}

static uint32_t ld_idx(const uint8_t *p, uint8_t w, uint32_t i)
{
    if (w == 1) return p[i];
    if (w == 2) return ((const uint16_t *)(const void *)p)[i];
    return ((const uint32_t *)(const void *)p)[i];
}

static fm_status parse_sparsity(fm_interp *it, fm_fb *fb, uint32_t sp, int16_t ti,
                                uint32_t data_len)
{
    fm_tensor *t = &it->tensors[ti];
    uint32_t n, v, i, dm_vec, rows = 1, seg_count = 0, idx_count = 0, last_dim, prev;
    fb_vector(fb, sp, SP_BLOCK_MAP, 4, &n);
    if (n)
        return fm_fail(it, FM_ERR_UNSUPPORTED,
                       "block-sparse weights (convert this layer dense, or prune it further)", -1, ti, (int32_t)n);
    v = fb_vector(fb, sp, SP_TRAVERSAL, 4, &n);
    if (fb->err) return format_error(it, fb, "bad sparsity parameters", -1, ti);
    if (n != t->ndim)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "sparse tensor traversal order", -1, ti, (int32_t)n);
    for (i = 0; i < n; i++)
        if (fb_vec_i32(fb, v, i) != (int32_t)i)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "sparse tensor traversal order", -1, ti, 0);
    dm_vec = fb_vector(fb, sp, SP_DIM_META, 4, &n);
    if (fb->err) return format_error(it, fb, "bad sparsity parameters", -1, ti);
    if (n != t->ndim || n < 2)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "sparse tensor dimension metadata", -1, ti, (int32_t)n);
    for (i = 0; i < n; i++) {
        uint32_t dm = fb_vec_table(fb, dm_vec, i);
        uint32_t fmt = fb_u8(fb, dm, DM_FORMAT, 0);
        if (fb->err) return format_error(it, fb, "bad sparsity parameters", -1, ti);
        if (i + 1 < n) {
            if (fmt != 0 || fb_i32(fb, dm, DM_DENSE_SIZE, 0) != t->dims[i])
                return fm_fail(it, FM_ERR_UNSUPPORTED,
                               "sparse tensor: only CSR on the last dimension", -1, ti, (int32_t)i);
            rows *= (uint32_t)t->dims[i];
        } else {
            if (fmt != 1)
                return fm_fail(it, FM_ERR_UNSUPPORTED,
                               "sparse tensor: only CSR on the last dimension", -1, ti, (int32_t)i);
            t->seg = index_vector(fb, dm, DM_SEG_TYPE, DM_SEG, &t->seg_w, &seg_count);
            t->idx = index_vector(fb, dm, DM_IDX_TYPE, DM_IDX, &t->idx_w, &idx_count);
            if (fb->err) return format_error(it, fb, "bad sparse index vector", -1, ti);
        }
    }
    if (!t->seg || !t->idx || seg_count != rows + 1 || idx_count != data_len)
        return fm_fail(it, FM_ERR_FORMAT, "sparse tensor: segment / index counts do not match",
                       -1, ti, (int32_t)seg_count);
    /* Segments must start at 0, never decrease and end at nnz; indices inside the last dim. */
    last_dim = (uint32_t)t->dims[t->ndim - 1];
    prev = ld_idx(t->seg, t->seg_w, 0);
    if (prev != 0) return fm_fail(it, FM_ERR_FORMAT, "sparse tensor: bad segments", -1, ti, 0);
    for (i = 1; i <= rows; i++) {
        uint32_t s = ld_idx(t->seg, t->seg_w, i);
        if (s < prev || s > idx_count)
            return fm_fail(it, FM_ERR_FORMAT, "sparse tensor: bad segments", -1, ti, (int32_t)i);
        prev = s;
    }
    if (prev != idx_count) return fm_fail(it, FM_ERR_FORMAT, "sparse tensor: bad segments", -1, ti, 0);
    /* every column index inside the last dimension: one loop per index width (a width switch
     * per index cost the MSP430 several times the compare) */
    i = idx_count;
    if (t->idx_w == 1) {
        const uint8_t *q = t->idx;
        for (i = 0; i < idx_count && q[i] < last_dim; i++) {
        }
    } else if (t->idx_w == 2) {
        const uint16_t *q = (const uint16_t *)(const void *)t->idx;
        for (i = 0; i < idx_count && q[i] < last_dim; i++) {
        }
    } else {
        const uint32_t *q = (const uint32_t *)(const void *)t->idx;
        for (i = 0; i < idx_count && q[i] < last_dim; i++) {
        }
    }
    if (i < idx_count)
        return fm_fail(it, FM_ERR_FORMAT, "sparse tensor: column index out of range", -1, ti, (int32_t)i);
    t->nnz = idx_count;
    t->bytes = data_len;
    t->flags |= FM_T_SPARSE;
    return FM_OK;
}

static fm_status parse_tensor(fm_interp *it, fm_fb *fb, uint32_t tt, uint32_t buffers,
                              uint32_t num_buffers, int16_t ti)
{
    fm_tensor *t = &it->tensors[ti];
    uint32_t n, v, i, q, buf_index, data_len = 0, data_pos = 0, bytes;
    memset(t, 0, sizeof *t);
    t->alias = -1;
    t->offset = -1;
    t->first = -1;
    t->last = -1;
    v = fb_vector(fb, tt, T_SHAPE, 4, &n);
    if (fb->err) return format_error(it, fb, "bad tensor", -1, ti);
    if (n > FM_MAX_DIMS)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "tensor has too many dimensions", -1, ti, (int32_t)n);
    t->ndim = (uint8_t)n;
    bytes = 1;
    for (i = 0; i < n; i++) {
        int32_t d = fb_vec_i32(fb, v, i);
        if (FM_LSTM && d == 0 && !fb->err) {   /* empty (an LSTM's unused intermediates): refused where used */
            t->type = (uint8_t)fb_u8(fb, tt, T_TYPE, 0);
            t->flags = FM_T_BADTYPE;
            return fb->err ? format_error(it, fb, "bad tensor", -1, ti) : FM_OK;
        }
        if (d < 1 || d > 65535)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "tensor dimension out of range", -1, ti, d);
        t->dims[i] = (uint16_t)d;
        /* bytes * d > 2^30 - 1, without a 64-bit product (helper calls on 16-bit targets) */
        if (bytes > 0x3FFFFFFFu / (uint32_t)d)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "tensor too large", -1, ti, 0);
        bytes *= (uint32_t)d;
    }
    t->type = (uint8_t)fb_u8(fb, tt, T_TYPE, 0);
    if (t->type == FM_RESOURCE) {       /* a resource variable's handle: storage given later */
        t->flags = FM_T_RESOURCE;
        return fb->err ? format_error(it, fb, "bad tensor", -1, ti) : FM_OK;
    }
    /* A type without an element size here (RESOURCE, BOOL, ...) or a variable tensor (operator
     * state: SVDF, LSTM) is refused when an operator or the graph uses it (usable), so that the
     * error names the operator; a tensor nothing uses is left alone. Builds without error text
     * (the MSP430's) refuse it here: less code, and nobody reads the details there. */
    if (!elem_size(t->type)) {
#if FM_ERROR_TEXT
        t->flags = FM_T_BADTYPE;
        return FM_OK;             /* a reader error stays sticky: the caller's next check sees it */
#else
        return fm_fail(it, FM_ERR_UNSUPPORTED, "tensor type not supported", -1, ti, t->type);
#endif
    }
    if (bytes > 0x3FFFFFFFu / elem_size(t->type))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "tensor too large", -1, ti, 0);
    t->bytes = bytes * elem_size(t->type);
    if (fb_u8(fb, tt, T_IS_VARIABLE, 0)) t->flags = FM_T_VARIABLE;   /* operator state (SVDF, LSTM) */
    buf_index = fb_u32(fb, tt, T_BUFFER, 0);
    if (buf_index >= num_buffers && !(buf_index == 0 && num_buffers == 0))
        return fm_fail(it, FM_ERR_FORMAT, "tensor buffer index out of range", -1, ti,
                       (int32_t)buf_index);
    if (num_buffers) {
        uint32_t bt = fb_vec_table(fb, buffers, buf_index);
        if (fb_u64_nonzero(fb, bt, BUF_OFFSET))
            return fm_fail(it, FM_ERR_UNSUPPORTED, "buffers outside the flatbuffer", -1, ti, 0);
        data_pos = fb_vector(fb, bt, BUF_DATA, 1, &data_len);
    }
    q = fb_table(fb, tt, T_QUANT);
    if (q) {
        uint32_t ns, nz, sv, zv;
        sv = fb_vector(fb, q, Q_SCALE, 4, &ns);
        zv = fb_vector(fb, q, Q_ZERO_POINT, 8, &nz);
        t->quant_dim = (uint8_t)fb_i32(fb, q, Q_DIM, 0);
        if (fb->err) return format_error(it, fb, "bad quantization parameters", -1, ti);
        /* a 1-D tensor (a bias) has one dimension to be per-channel on, whatever its
         * quantized_dimension says (TFLite Micro ignores the field there) */
        if (t->ndim == 1) t->quant_dim = 0;
        if (ns > 65535u || (ns > 1 && (t->quant_dim >= t->ndim || (int32_t)ns != t->dims[t->quant_dim])))
            return fm_fail(it, FM_ERR_FORMAT, "per-channel scales do not match the shape", -1, ti,
                           (int32_t)ns);
        if (ns) {
            t->scale = fm_ld_f32(fb->buf + sv);
            t->scales = fb->buf + sv;
            t->num_scales = (uint16_t)ns;
        }
        if (nz) {
            int32_t lo = (int32_t)fm_ld_u32(fb->buf + zv), hi = (int32_t)fm_ld_u32(fb->buf + zv + 4);
            if (hi != (lo < 0 ? -1 : 0) || lo < -32768 || lo > 32767 ||
                (t->type == FM_INT8 && (lo < -128 || lo > 127)))
                return fm_fail(it, FM_ERR_UNSUPPORTED, "zero point out of range", -1, ti, lo);
            t->zero_point = lo;
        }
    }
    if (data_len) {
        uint32_t sp = fb_table(fb, tt, T_SPARSITY);
        t->cdata = fb->buf + data_pos;
        t->flags |= FM_T_CONST;
        if (sp) return parse_sparsity(it, fb, sp, ti, data_len);
        if (data_len != t->bytes)
            return fm_fail(it, FM_ERR_FORMAT, "constant tensor size differs from its shape", -1,
                           ti, (int32_t)data_len);
        if (((uintptr_t)t->cdata) % elem_size(t->type))
            return fm_fail(it, FM_ERR_UNSUPPORTED, "misaligned constant tensor", -1, ti, 0);
    }
    return fb->err ? format_error(it, fb, "bad tensor", -1, ti) : FM_OK;
}

/* Builtin code of an operator code table (the larger of the deprecated int8 and the int32
 * field, as TFLite reads it). */
FM_NOINLINE int32_t fm_builtin_code(fm_fb *fb, uint32_t ct)
{
    const int32_t old = fb_i8(fb, ct, OC_DEPRECATED, 0), code = fb_i32(fb, ct, OC_BUILTIN, 0);
    return code > old ? code : old;
}

static FM_NOINLINE const fm_kernel *find_kernel(int32_t code, uint8_t *index)
{
    uint16_t k;
    for (k = 0; k < fm_num_kernels; k++)
        if (fm_kernels[k]->code == code) {
            *index = (uint8_t)k;
            return fm_kernels[k];
        }
    return NULL;
}

/* State an operator keeps: its channels' multipliers, an LSTM's requantizations (0 for most
 * operators). */

static uint32_t op_state_bytes(fm_fb *fb, uint32_t tensors, uint32_t num_tensors, int32_t code,
                               uint32_t opt)
{
    uint32_t n, v, tt, sv, ns, dim;
    int32_t f;
#if FM_LSTM
    if (code == FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM) return FM_ALIGN4(sizeof(fm_lstm_q));
#endif
    if (code != FM_OP_CONV_2D && code != FM_OP_DEPTHWISE_CONV_2D && code != FM_OP_FULLY_CONNECTED &&
        code != FM_OP_TRANSPOSE_CONV)
        return 0;
    v = fb_vector(fb, opt, OP_INPUTS, 4, &n);
    if (fb->err || n < 2) return 0;
    f = fb_vec_i32(fb, v, 1);
    if (f < 0 || (uint32_t)f >= num_tensors) return 0;
    tt = fb_vec_table(fb, tensors, (uint32_t)f);
    sv = fb_vector(fb, tt, T_SHAPE, 4, &ns);
    if (fb->err || ns < 1) return 0;
    dim = code == FM_OP_DEPTHWISE_CONV_2D ? ns - 1 : 0;
    f = fb_vec_i32(fb, sv, dim);
    if (f < 1 || f > 65535) return 0;
    /* multiplier (int32) and shift (int8); CONV_2D also keeps acc0 (int32) */
    return (code == FM_OP_CONV_2D ? 2u : 1u) * 4u * (uint32_t)f + FM_ALIGN4((uint32_t)f);
}

/* Refuse tensor t, used by operator op (-1: a graph input or output), if this runtime cannot
 * hold it (see parse_tensor; without error text every such tensor was refused there). */
#if FM_ERROR_TEXT
static FM_NOINLINE fm_status usable(fm_interp *it, int32_t op, int32_t t)
{
    const uint8_t f = it->tensors[t].flags;
    if ((f & FM_T_VARIABLE) && !(op >= 0 && (FM_OP(it, op)->code == FM_OP_SVDF ||
                                             FM_OP(it, op)->code == FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM)))
        return fm_fail(it, FM_ERR_UNSUPPORTED, "variable tensor (operator state) not supported", op, t,
                       it->tensors[t].type);
    if (f & FM_T_BADTYPE)
        return fm_fail(it, FM_ERR_UNSUPPORTED, elem_size(it->tensors[t].type) ? "tensor is empty (a zero dimension)" :
                       "tensor type not supported", op, t, it->tensors[t].type);
    return FM_OK;
}
#define USABLE(it, op, t) usable((it), (op), (t))
#elif FM_LSTM
/* (the only tensors parse_tensor leaves marked here are empty ones) */
#define USABLE(it, op, t) \
    ((it)->tensors[t].flags & FM_T_BADTYPE ? fm_fail((it), FM_ERR_UNSUPPORTED, "", (op), (t), 0) : FM_OK)
#else
#define USABLE(it, op, t) ((void)(it), (void)(op), (void)(t), FM_OK)
#endif

static void touch(fm_tensor *t, int16_t op)
{
    if (t->first < 0 || op < t->first) t->first = op;
    if (op > t->last) t->last = op;
    t->flags |= FM_T_USED;
}

fm_status fm_init(fm_interp *it, const uint8_t *model, uint32_t model_len, uint8_t *state,
                  uint32_t state_len, uint8_t *arena, uint32_t arena_len)
{
    return fm_init_subgraph(it, model, model_len, 0u, state, state_len, arena, arena_len);
}

fm_status fm_init_subgraph(fm_interp *it, const uint8_t *model, uint32_t model_len,
                           uint16_t subgraph, uint8_t *state, uint32_t state_len, uint8_t *arena,
                           uint32_t arena_len)
{
    fm_fb fb;
    uint32_t root, codes, num_codes, sgs, num_sgs, sg, tensors, nt, ops, nops, buffers, nbuf;
    uint32_t io, nio, i, j, need, records = 0;
    uint8_t *record;
    uint8_t kidx;
    const fm_kernel *k;
    fm_status s;
    if (!it) return FM_ERR_ARG;
    memset(it, 0, sizeof *it);
    it->err.op = it->err.tensor = it->err.offset = -1;
    if (!model) return fm_fail(it, FM_ERR_ARG, "no model", -1, -1, 0);
    it->model = model;
    it->model_len = model_len;
    it->state = state;
    it->state_len = state ? state_len : 0;
    it->arena = arena;
    it->arena_len = arena ? arena_len : 0;
    fb.buf = model;
    fb.len = model_len;
    fb.err = 0;
    fb.err_pos = 0;
    root = fb_root(&fb);
    if (fb.err) return format_error(it, &fb, "not a flatbuffer (too short or bad root offset)", -1, -1);
    if (memcmp(model + 4, "TFL3", 4) != 0)
        return fm_fail(it, FM_ERR_FORMAT, "file identifier is not TFL3", -1, -1, 0);
    codes = fb_vector(&fb, root, MODEL_OPCODES, 4, &num_codes);
    sgs = fb_vector(&fb, root, MODEL_SUBGRAPHS, 4, &num_sgs);
    buffers = fb_vector(&fb, root, MODEL_BUFFERS, 4, &nbuf);
    if (fb.err) return format_error(it, &fb, "bad model table", -1, -1);
    /* every buffer's data lies inside the file, also those no tensor reads (metadata entries, which
     * freeml_keras.format.tflite.write_model puts at the end of the file): a truncated file is
     * refused here rather than prepared from what is left */
    for (i = 0; i < nbuf && !fb.err; i++) {
        uint32_t n;
        (void)fb_vector(&fb, fb_vec_table(&fb, buffers, i), BUF_DATA, 1, &n);
    }
    if (fb.err) return format_error(it, &fb, "buffer data out of bounds", -1, -1);
    if (num_sgs < 1) return fm_fail(it, FM_ERR_FORMAT, "model has no subgraphs", -1, -1, 0);
    if (subgraph >= num_sgs)
        return fm_fail(it, FM_ERR_ARG, "no such subgraph", -1, -1, (int32_t)subgraph);
    sg = fb_vec_table(&fb, sgs, subgraph);
    tensors = fb_vector(&fb, sg, SG_TENSORS, 4, &nt);
    ops = fb_vector(&fb, sg, SG_OPERATORS, 4, &nops);
    if (fb.err) return format_error(it, &fb, "bad subgraph table", -1, -1);
    if (nt == 0 || nt > FM_MAX_TENSORS || nops == 0 || nops > FM_MAX_OPS)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "tensor or operator count out of range", -1, -1,
                       (int32_t)nt);
    /* State needed, known before anything is written. */
    need = FM_ALIGN4(nt * (uint32_t)sizeof(fm_tensor)) + FM_ALIGN4(nops * (uint32_t)sizeof(fm_op *));
    for (i = 0; i < nops; i++) {
        uint32_t ot = fb_vec_table(&fb, ops, i), oci = fb_u32(&fb, ot, OP_OPCODE, 0), ct;
        int32_t code;
        if (fb.err) return format_error(it, &fb, "bad operator table", (int32_t)i, -1);
        if (oci >= num_codes)
            return fm_fail(it, FM_ERR_FORMAT, "operator code index out of range", (int32_t)i, -1,
                           (int32_t)oci);
        ct = fb_vec_table(&fb, codes, oci);
        code = fm_builtin_code(&fb, ct);
        k = find_kernel(code, &kidx);
#if FM_ERROR_TEXT
        /* every operator is checked before anything else: the first refusal of a model with
         * operators this runtime lacks names one of them */
        if (!fb.err && !k)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "operator not supported", (int32_t)i, -1, code);
#endif
        records += k ? k->record : FM_OP_HEADER_BYTES;
        need += op_state_bytes(&fb, tensors, nt, code, ot);
        if (fb.err) return format_error(it, &fb, "bad operator table", (int32_t)i, -1);
    }
    need += FM_ALIGN4(records);
    it->state_needed = need;
    if (it->state_len < need)
        return fm_fail(it, FM_ERR_MEMORY, "state block too small", -1, -1, (int32_t)need);
    if (((uintptr_t)state) % 4)
        return fm_fail(it, FM_ERR_ARG, "state block must be 4-byte aligned", -1, -1, 0);
    s = fm_pre_find(it, subgraph, nops);
    if (s) return s;
    it->tensors = (fm_tensor *)fm_state_alloc(it, nt * (uint32_t)sizeof(fm_tensor));
    it->op_at = (fm_op **)fm_state_alloc(it, nops * (uint32_t)sizeof(fm_op *));
    record = (uint8_t *)fm_state_alloc(it, records);     /* the records, one after another */
    it->num_tensors = (uint16_t)nt;
    it->num_ops = 0;                                      /* (counted as their records are set) */
    for (i = 0; i < nt; i++) {
        uint32_t tt = fb_vec_table(&fb, tensors, i);
        if (fb.err) return format_error(it, &fb, "bad tensor table", -1, (int32_t)i);
        s = parse_tensor(it, &fb, tt, buffers, nbuf, (int16_t)i);
        if (s) return s;
    }
    /* graph inputs and outputs */
    for (j = 0; j < 2; j++) {
        io = fb_vector(&fb, sg, (uint16_t)(j ? SG_OUTPUTS : SG_INPUTS), 4, &nio);
        if (fb.err) return format_error(it, &fb, "bad subgraph inputs/outputs", -1, -1);
        if (nio < 1 || nio > FM_MAX_IO)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "number of graph inputs/outputs", -1, -1,
                           (int32_t)nio);
        for (i = 0; i < nio; i++) {
            int32_t t = fb_vec_i32(&fb, io, i);
            if (t < 0 || (uint32_t)t >= nt || (it->tensors[t].flags & FM_T_CONST))
                return fm_fail(it, FM_ERR_FORMAT, "graph input/output is not an activation", -1,
                               t, 0);
            if (j) it->outputs[i] = (int16_t)t; else it->inputs[i] = (int16_t)t;
        }
        if (j) it->num_outputs = (uint8_t)nio; else it->num_inputs = (uint8_t)nio;
    }
    for (i = 0; i < it->num_inputs; i++) touch(&it->tensors[it->inputs[i]], 0);
    /* operators */
    for (i = 0; i < nops; i++) {
        uint32_t ot = fb_vec_table(&fb, ops, i), oci = fb_u32(&fb, ot, OP_OPCODE, 0), v, n;
        const int32_t code = fm_builtin_code(&fb, fb_vec_table(&fb, codes, oci));
        fm_op *op = (fm_op *)(void *)record;
        uint8_t multi, lstm, unpack;
        k = find_kernel(code, &kidx);
        if (!k || !k->prepare)       /* (no prepare: a build with FM_PREPARE_ON_DEVICE 0) */
            return fm_fail(it, FM_ERR_UNSUPPORTED, "operator not supported", (int32_t)i, -1, code);
        record += k->record;
        it->op_at[i] = op;
        it->num_ops = (uint16_t)(i + 1);
        memset(op, 0, k->record);
        op->scratch_off = -1;
        op->out = -1;
        op->code = code;
        op->kernel = kidx;
        op->opts = fb_table(&fb, ot, OP_OPTIONS);
        v = fb_vector(&fb, ot, OP_INPUTS, 4, &n);
        if (fb.err) return format_error(it, &fb, "bad operator inputs", (int32_t)i, -1);
        /* (an LSTM's 24 inputs are all in its parameters, the first FM_MAX_OP_INPUTS in op->in) */
        lstm = FM_LSTM && op->code == FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM;
        if (n > (lstm ? 24u : (uint32_t)FM_MAX_OP_INPUTS))
            return fm_fail(it, FM_ERR_UNSUPPORTED, "too many operator inputs", (int32_t)i, -1, (int32_t)n);
        op->num_in = (uint8_t)(n > FM_MAX_OP_INPUTS ? FM_MAX_OP_INPUTS : n);
        if (lstm) {
            op->p.lstm.count = (uint8_t)n;
            for (j = 0; j < 24u; j++) op->p.lstm.t[j] = -1;
        }
        for (j = 0; j < n; j++) {
            int32_t t = fb_vec_i32(&fb, v, j);
            if (t < -1 || t >= (int32_t)nt)
                return fm_fail(it, FM_ERR_FORMAT, "operator input index out of range", (int32_t)i, t, 0);
            if (j < FM_MAX_OP_INPUTS) op->in[j] = (int16_t)t;
            if (lstm) op->p.lstm.t[j] = (int16_t)t;
            if (t >= 0 && (s = USABLE(it, (int32_t)i, t)) != FM_OK) return s;
            if (t >= 0 && !(it->tensors[t].flags & FM_T_CONST)) {
                if (it->tensors[t].first < 0 && !(it->tensors[t].flags & FM_T_VARIABLE))
                    return fm_fail(it, FM_ERR_FORMAT, "tensor read before it is written",
                                   (int32_t)i, t, 0);
                touch(&it->tensors[t], (int16_t)i);
            }
        }
        v = fb_vector(&fb, ot, OP_OUTPUTS, 4, &n);
        if (fb.err) return format_error(it, &fb, "bad operator outputs", (int32_t)i, -1);
        /* one output; none for ASSIGN_VARIABLE and CALL_ONCE; several for SPLIT and SPLIT_V,
         * whose outputs follow their inputs in op->in (op->out is the first), and for UNPACK */
        multi = op->code == FM_OP_SPLIT || op->code == FM_OP_SPLIT_V;
        unpack = op->code == FM_OP_UNPACK;       /* (its outputs in its parameters) */
        if (n == 0 && (op->code == FM_OP_ASSIGN_VARIABLE || op->code == FM_OP_CALL_ONCE)) {
            /* no output: op->out stays -1 */
        } else if (unpack && n >= 1 && n <= FM_UNPACK_MAX) {
            op->p.unpack.num = (uint8_t)n;
        } else if (n != 1 && !(n > 1 && multi)) {
            return fm_fail(it, FM_ERR_UNSUPPORTED, "operators must have one output", (int32_t)i, -1, (int32_t)n);
        } else if (multi && op->num_in + n > FM_MAX_OP_INPUTS) {
            return fm_fail(it, FM_ERR_UNSUPPORTED, "too many operator outputs", (int32_t)i, -1, (int32_t)n);
        }
        for (j = 0; j < n; j++) {
            const int32_t t = fb_vec_i32(&fb, v, j);
            if (t < 0 || t >= (int32_t)nt || (it->tensors[t].flags & FM_T_CONST) || it->tensors[t].first >= 0)
                return fm_fail(it, FM_ERR_FORMAT, "operator output is constant or written twice",
                               (int32_t)i, t, 0);
            if ((s = USABLE(it, (int32_t)i, t)) != FM_OK) return s;
            touch(&it->tensors[t], (int16_t)i);
            if (j == 0) op->out = (int16_t)t;
            if (multi) op->in[op->num_in + j] = (int16_t)t;
            if (unpack) op->p.unpack.out[j] = (int16_t)t;
        }
        if (multi) op->num_in = (uint8_t)(op->num_in + n);
        fm_pre_begin(it, (uint16_t)i);
        s = k->prepare(it, (uint16_t)i, op);
        if (s == FM_OK) s = fm_pre_end(it, (uint16_t)i);
        if (s) {
            if (it->err.op < 0) it->err.op = (int32_t)i;
            return s;
        }
        if (fb.err) return format_error(it, &fb, "bad operator options", (int32_t)i, -1);
    }
#if FM_ERROR_TEXT
    for (i = 0; i < it->num_inputs; i++)          /* inputs no operator reads */
        if ((s = usable(it, -1, it->inputs[i])) != FM_OK) return s;
#endif
    for (i = 0; i < it->num_outputs; i++) {
        fm_tensor *t = &it->tensors[it->outputs[i]];
        if (t->first < 0) return fm_fail(it, FM_ERR_FORMAT, "graph output never written", -1, it->outputs[i], 0);
        t->last = (int16_t)nops;
        if (fm_root(it, it->outputs[i])->flags & FM_T_CONST)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "graph output is a constant", -1, it->outputs[i], 0);
    }
    s = fm_plan(it);
    if (s) return s;
    if (it->arena_len < it->arena_needed)
        return fm_fail(it, FM_ERR_MEMORY, "arena too small", -1, -1, (int32_t)it->arena_needed);
    if (((uintptr_t)arena) % 4)
        return fm_fail(it, FM_ERR_ARG, "arena must be 4-byte aligned", -1, -1, 0);
    it->ready = 1;
    it->err.msg = NULL;
    return FM_OK;
}

