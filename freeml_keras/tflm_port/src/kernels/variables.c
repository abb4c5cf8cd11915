/* Resource variables, the state of streaming models: VAR_HANDLE, READ_VARIABLE, ASSIGN_VARIABLE
 * and CALL_ONCE (TFLite Micro's semantics).
 *
 * A variable is the RESOURCE tensor of the first VAR_HANDLE of its name (later handles of the
 * same name are aliases of it); the planner gives it arena memory for the whole graph, so it
 * lives with the arena (in NVM with the intermittent runtime) and keeps its value from one
 * inference to the next and across power failures. READ_VARIABLE and ASSIGN_VARIABLE copy
 * (units: bytes; a step never spans two operators, so a copy re-run after a failure reads what
 * it read before). CALL_ONCE's init subgraph may hold only VAR_HANDLE and ASSIGN_VARIABLE of
 * constants: its prepare checks that, and each variable takes its initial value from it (or,
 * when it assigns none, the low byte of the zero point of the first tensor assigned to it, as
 * TFLite Micro's default). CALL_ONCE's one unit initializes every variable whose initialized word
 * does not hold this model's value, the word written after the value: a failure in it leaves the
 * variable to be initialized again, a finished one is never initialized twice, whatever
 * re-preparations or restarts come between. */
#include <string.h>

#include "freeml/fm_internal.h"

/* TFLite schema field ids: Model, SubGraph, Tensor, Operator, VarHandleOptions, CallOnceOptions. */
enum { M_OPCODES = 1, M_SUBGRAPHS = 2, M_BUFFERS = 4 };
enum { G_TENSORS = 0, G_OPERATORS = 3 };
enum { TT_SHAPE = 0, TT_TYPE = 1, TT_BUFFER = 2, TT_QUANT = 4 };
enum { O_OPCODE = 0, O_INPUTS = 1, O_OUTPUTS = 2, O_OPTIONS = 4 };
enum { VH_CONTAINER = 0, VH_SHARED_NAME = 1 };

static void model_fb(const fm_interp *it, fm_fb *fb)
{
    fb->buf = it->model;
    fb->len = it->model_len;
    fb->err = 0;
    fb->err_pos = 0;
}

/* 1 when the VarHandleOptions tables a and b name the same variable (container and shared
 * name equal; a missing container matches any, as in TFLite Micro). */
static uint8_t same_variable(fm_fb *fb, uint32_t a, uint32_t b)
{
    uint32_t na, nb, ca, cb, pa, pb;
    pa = fb_vector(fb, a, VH_SHARED_NAME, 1, &na);
    pb = fb_vector(fb, b, VH_SHARED_NAME, 1, &nb);
    if (fb->err || na != nb || (na && memcmp(fb->buf + pa, fb->buf + pb, na) != 0)) return 0;
    pa = fb_vector(fb, a, VH_CONTAINER, 1, &ca);
    pb = fb_vector(fb, b, VH_CONTAINER, 1, &cb);
    if (fb->err) return 0;
    return !pa || !pb || (ca == cb && memcmp(fb->buf + pa, fb->buf + pb, ca) == 0);
}

/* Walk CALL_ONCE's init subgraph `sg`: every operator must be VAR_HANDLE or ASSIGN_VARIABLE of
 * a constant to a handle made there. With `name` (a VarHandleOptions table of the main graph),
 * *value, *bytes and *zp receive the last value assigned to that variable (*value NULL when
 * none is). */
static fm_status walk_init(fm_interp *it, uint16_t opi, uint32_t sg, uint32_t name, const uint8_t **value,
                           uint32_t *bytes, int32_t *zp)
{
    fm_fb fb;
    uint32_t root, codes, ncodes, sgs, nsgs, g, tensors, nt, ops, nops, buffers, nbuf, i;
    model_fb(it, &fb);
    root = fb_root(&fb);
    codes = fb_vector(&fb, root, M_OPCODES, 4, &ncodes);
    sgs = fb_vector(&fb, root, M_SUBGRAPHS, 4, &nsgs);
    buffers = fb_vector(&fb, root, M_BUFFERS, 4, &nbuf);
    if (fb.err || sg >= nsgs) return fm_fail(it, FM_ERR_FORMAT, "CALL_ONCE init subgraph out of range", opi, -1, (int32_t)sg);
    g = fb_vec_table(&fb, sgs, sg);
    tensors = fb_vector(&fb, g, G_TENSORS, 4, &nt);
    ops = fb_vector(&fb, g, G_OPERATORS, 4, &nops);
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad CALL_ONCE init subgraph", opi, -1, (int32_t)sg);
    if (value) *value = NULL;
    for (i = 0; i < nops; i++) {
        uint32_t ot = fb_vec_table(&fb, ops, i), oci = fb_u32(&fb, ot, O_OPCODE, 0), v, n, k;
        int32_t code, res, val, h = -1;
        if (fb.err || oci >= ncodes) return fm_fail(it, FM_ERR_FORMAT, "bad CALL_ONCE init subgraph", opi, -1, (int32_t)i);
        code = fm_builtin_code(&fb, fb_vec_table(&fb, codes, oci));
        if (code == FM_OP_VAR_HANDLE) continue;
        if (code != FM_OP_ASSIGN_VARIABLE)
            return fm_fail(it, FM_ERR_UNSUPPORTED,
                           "CALL_ONCE init subgraph: only VAR_HANDLE and ASSIGN_VARIABLE of constants are supported",
                           opi, -1, code);
        v = fb_vector(&fb, ot, O_INPUTS, 4, &n);
        if (fb.err || n != 2) return fm_fail(it, FM_ERR_FORMAT, "bad ASSIGN_VARIABLE in the CALL_ONCE init subgraph", opi, -1, (int32_t)i);
        res = fb_vec_i32(&fb, v, 0);
        val = fb_vec_i32(&fb, v, 1);
        if (res < 0 || val < 0 || (uint32_t)res >= nt || (uint32_t)val >= nt)
            return fm_fail(it, FM_ERR_FORMAT, "bad ASSIGN_VARIABLE in the CALL_ONCE init subgraph", opi, -1, (int32_t)i);
        /* the VAR_HANDLE before it that made the handle */
        for (k = 0; k < i && h < 0; k++) {
            const uint32_t kt = fb_vec_table(&fb, ops, k), kc = fb_u32(&fb, kt, O_OPCODE, 0);
            uint32_t kv, kn;
            if (fb.err || kc >= ncodes || fm_builtin_code(&fb, fb_vec_table(&fb, codes, kc)) != FM_OP_VAR_HANDLE)
                continue;
            kv = fb_vector(&fb, kt, O_OUTPUTS, 4, &kn);
            if (!fb.err && kn == 1 && fb_vec_i32(&fb, kv, 0) == res) h = (int32_t)k;
        }
        if (fb.err || h < 0)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "CALL_ONCE init subgraph assigns a handle it did not make", opi, -1, (int32_t)i);
        {
            const uint32_t vt = fb_vec_table(&fb, tensors, (uint32_t)val);
            const uint32_t type = fb_u8(&fb, vt, TT_TYPE, 0), bi = fb_u32(&fb, vt, TT_BUFFER, 0);
            const uint32_t es = type == FM_INT8 || type == FM_UINT8 ? 1u : type == FM_INT16 ? 2u :
                                type == FM_INT32 || type == FM_FLOAT32 ? 4u : 0u;
            uint32_t nd, d, size = es, len = 0, pos = 0, q, zn, zv;
            const uint32_t sv = fb_vector(&fb, vt, TT_SHAPE, 4, &nd);
            for (d = 0; d < nd && !fb.err; d++) {
                const int32_t x = fb_vec_i32(&fb, sv, d);
                if (x < 1 || x > 65535 || size > 0x3FFFFFFFu / (uint32_t)x) size = 0;
                else size *= (uint32_t)x;
            }
            if (bi < nbuf) pos = fb_vector(&fb, fb_vec_table(&fb, buffers, bi), 0, 1, &len);
            if (fb.err || !size || !pos || len != size)
                return fm_fail(it, FM_ERR_UNSUPPORTED, "CALL_ONCE init subgraph assigns a value that is not a constant",
                               opi, -1, (int32_t)i);
            if (name && same_variable(&fb, name, fb_table(&fb, fb_vec_table(&fb, ops, (uint32_t)h), O_OPTIONS))) {
                *value = fb.buf + pos;
                *bytes = len;
                *zp = 0;
                q = fb_table(&fb, vt, TT_QUANT);
                zv = fb_vector(&fb, q, 3, 8, &zn);        /* QuantizationParameters.zero_point */
                if (zn) *zp = (int32_t)fm_ld_u32(fb.buf + zv);
            }
        }
        if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad CALL_ONCE init subgraph", opi, -1, (int32_t)i);
    }
    return FM_OK;
}

/* The variable of resource operand t of operator opi (its root RESOURCE tensor). */
static fm_status variable(fm_interp *it, uint16_t opi, int16_t t, fm_tensor **var)
{
    if (t < 0 || t >= (int16_t)it->num_tensors || !(it->tensors[t].flags & FM_T_RESOURCE))
        return fm_fail(it, FM_ERR_FORMAT, "operand is not a resource variable", opi, t, 0);
    *var = (fm_tensor *)(uintptr_t)fm_root(it, t);
    return FM_OK;
}

/* The variable's size: set by its first reader or writer, the same for every other. */
static fm_status var_bytes(fm_interp *it, uint16_t opi, fm_tensor *var, int16_t t)
{
    const fm_tensor *x = &it->tensors[t];
    if (x->flags & (FM_T_RESOURCE | FM_T_SPARSE | FM_T_BADTYPE | FM_T_VARIABLE) || !x->bytes)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "resource variable of an unsupported type", opi, t, x->type);
    if (var->bytes == 0u) var->bytes = x->bytes;
    if (var->bytes != x->bytes)
        return fm_fail(it, FM_ERR_FORMAT, "tensor size differs from the resource variable's", opi, t,
                       (int32_t)var->bytes);
    return FM_OK;
}

static fm_status var_handle_prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_fb fb;
    fm_tensor *t;
    fm_status s;
    uint16_t j;
    int16_t once = -1;
    if (op->num_in != 0 || op->out < 0 || !(it->tensors[op->out].flags & FM_T_RESOURCE))
        return fm_fail(it, FM_ERR_FORMAT, "VAR_HANDLE makes one RESOURCE tensor from nothing", opi, op->out, 0);
    model_fb(it, &fb);
    op->units = 0;
    for (j = 0; j < opi; j++) {
        if (FM_OP(it, j)->code == FM_OP_CALL_ONCE) once = (int16_t)j;
        if (FM_OP(it, j)->code == FM_OP_VAR_HANDLE && same_variable(&fb, FM_OP(it, j)->opts, op->opts)) {
            fm_alias(it, op->out, FM_OP(it, j)->out);      /* another handle of the same variable */
            return FM_OK;
        }
    }
    if (fb.err) return fm_fail(it, FM_ERR_FORMAT, "bad VAR_HANDLE options", opi, -1, 0);
    if (once < 0)
        return fm_fail(it, FM_ERR_UNSUPPORTED, "resource variable without a CALL_ONCE initializer before it", opi,
                       op->out, 0);
    t = &it->tensors[op->out];
    s = walk_init(it, opi, (uint32_t)FM_OP(it, once)->p.once.subgraph, op->opts, &t->seg, &t->bytes, &t->zero_point);
    if (s == FM_OK && t->seg) t->flags |= FM_T_VAR_FILL;
    return s;
}

static fm_status read_prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_tensor *var = NULL;
    fm_status s;
    if (op->num_in != 1) return fm_fail(it, FM_ERR_FORMAT, "READ_VARIABLE reads one variable", opi, -1, 0);
    if ((s = variable(it, opi, op->in[0], &var)) != FM_OK) return s;
    if ((s = var_bytes(it, opi, var, op->out)) != FM_OK) return s;
    op->units = var->bytes;
    return FM_OK;
}

static fm_status assign_prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_tensor *var = NULL;
    fm_status s;
    if (op->num_in != 2 || op->in[1] < 0) return fm_fail(it, FM_ERR_FORMAT, "ASSIGN_VARIABLE needs a variable and a value", opi, -1, 0);
    if ((s = variable(it, opi, op->in[0], &var)) != FM_OK) return s;
    if ((s = var_bytes(it, opi, var, op->in[1])) != FM_OK) return s;
    if (!(var->flags & FM_T_VAR_FILL)) {       /* TFLite Micro's default: the first assigned zero point */
        var->zero_point = it->tensors[op->in[1]].zero_point;
        var->flags |= FM_T_VAR_FILL;
    }
    op->units = var->bytes;
    return FM_OK;
}

static fm_status call_once_prepare(fm_interp *it, uint16_t opi, fm_op *op)
{
    fm_fb fb;
    uint16_t j;
    int32_t sg;
    if (op->num_in != 0) return fm_fail(it, FM_ERR_FORMAT, "CALL_ONCE takes no inputs", opi, -1, 0);
    for (j = 0; j < opi; j++)
        if (FM_OP(it, j)->code == FM_OP_CALL_ONCE)
            return fm_fail(it, FM_ERR_UNSUPPORTED, "more than one CALL_ONCE", opi, -1, 0);
    model_fb(it, &fb);
    sg = fb_i32(&fb, op->opts, 0, -1);                   /* CallOnceOptions.init_subgraph_index */
    if (fb.err || sg < 1) return fm_fail(it, FM_ERR_FORMAT, "bad CALL_ONCE init subgraph index", opi, -1, sg);
    op->p.once.subgraph = sg;
    op->units = 1;
    return walk_init(it, opi, (uint32_t)sg, 0u, NULL, NULL, NULL);
}

static void read_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    memcpy(fm_data(it, op->out) + begin, fm_data(it, op->in[0]) + begin, end - begin);
}

static void assign_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    memcpy(fm_data(it, op->in[0]) + begin, fm_data(it, op->in[1]) + begin, end - begin);
}

static void no_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    (void)it; (void)op; (void)begin; (void)end;
}

/* Initialize every variable that is not: the value (volatile stores, in order), then its word. */
static void call_once_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end)
{
    const uint32_t ready = fm_state_ready(it);
    const fm_tensor *t = it->tensors;
    uint16_t i;
    (void)op; (void)begin; (void)end;
    for (i = 0; i < it->num_tensors; i++, t++) {
        volatile uint8_t *v;
        volatile uint32_t *word;
        uint32_t k;
        if (!(t->flags & FM_T_RESOURCE) || t->alias >= 0 || t->offset < 0 || !t->bytes) continue;
        v = it->arena + t->offset;
        word = fm_state_word(it, t);
        if (*word == ready) continue;
        for (k = 0; k < t->bytes; k++) v[k] = t->seg ? t->seg[k] : (uint8_t)t->zero_point;
        *word = ready;
    }
}

const fm_kernel fm_kernel_var_handle = {FM_OP_VAR_HANDLE, FM_KERNEL_PREPARE(var_handle_prepare), FM_KERNEL_EVAL(no_eval), FM_OP_HEADER_BYTES};
const fm_kernel fm_kernel_read_variable = {FM_OP_READ_VARIABLE, FM_KERNEL_PREPARE(read_prepare), FM_KERNEL_EVAL(read_eval), FM_OP_HEADER_BYTES};
const fm_kernel fm_kernel_assign_variable = {FM_OP_ASSIGN_VARIABLE, FM_KERNEL_PREPARE(assign_prepare),
                                             FM_KERNEL_EVAL(assign_eval), FM_OP_HEADER_BYTES};
const fm_kernel fm_kernel_call_once = {FM_OP_CALL_ONCE, FM_KERNEL_PREPARE(call_once_prepare), FM_KERNEL_EVAL(call_once_eval), FM_OP_RECORD(once)};
