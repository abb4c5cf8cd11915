/* Internal tables of the runtime: tensors, operators, kernel parameters, the flatbuffer reader. */
#ifndef FREEML_FM_INTERNAL_H
#define FREEML_FM_INTERNAL_H

#include <stddef.h>

#include "freeml/fm.h"
#include "freeml/fm_math.h"

/* ---- per-model kernel configuration ------------------------------------------------------- */

/* A target build for one model (freeml_keras.targets.kernel_config_source) defines
 * FM_KERNEL_CONFIG and supplies fm_kernel_config.h, which sets each switch below to 0 or 1 so
 * that only the code paths the model uses are compiled (the MSP430 has 48 KB of FRAM for code and
 * model together). Without it (host builds) every path is built. A model that needs a path its
 * build left out fails in fm_init with FM_ERR_UNSUPPORTED, never at run time.
 *   FM_CONV_DENSE           CONV_2D with dense weights
 *   FM_CONV_SPARSE_<I>      CONV_2D with CSR weights, I-bit column indices (I in 8, 16, 32)
 *   FM_FC_DENSE             FULLY_CONNECTED with dense weights
 *   FM_FC_SPARSE_<I>        FULLY_CONNECTED with CSR weights, I-bit column indices
 * and one switch of the intermittent runtime (checkpoint.c), 1 when the file does not set it:
 *   FM_EXITS                anytime exit through the model's exit head (fm_intermittent.exits).
 *                           0 (a model without exit points): checkpoint.c has no fm_exit_* calls,
 *                           exit_head.c need not be linked (about 5 KB on the MSP430), and an
 *                           fm_intermittent with exits set is refused with FM_ERR_UNSUPPORTED
 *                           by fm_prepare_input, fm_start, fm_resume, fm_answer, fm_exit_now. */
#ifdef FM_KERNEL_CONFIG
#include "fm_kernel_config.h"
#else
#define FM_CONV_DENSE 1
#define FM_CONV_SPARSE_8 1
#define FM_CONV_SPARSE_16 1
#define FM_CONV_SPARSE_32 1
#define FM_FC_DENSE 1
#define FM_FC_SPARSE_8 1
#define FM_FC_SPARSE_16 1
#define FM_FC_SPARSE_32 1
#endif
#ifndef FM_EXITS
#define FM_EXITS 1
#endif
/* FM_SOFTMAX_INT16: SOFTMAX with an int16 output (1 when the file does not set it); 0 leaves
 * that path out and refuses such a SOFTMAX in prepare. */
#ifndef FM_SOFTMAX_INT16
#define FM_SOFTMAX_INT16 1
#endif
/* FM_QUANTIZE_FLOAT: QUANTIZE from float32 (1 when the file does not set it); 0 leaves that path
 * out, with the software floating point it needs on the MSP430 (about 4 KB of code), and refuses
 * such a QUANTIZE in prepare. */
#ifndef FM_QUANTIZE_FLOAT
#define FM_QUANTIZE_FLOAT 1
#endif
/* FM_LSTM: UNIDIRECTIONAL_SEQUENCE_LSTM's support outside its kernel (its 24 inputs and the
 * converter's empty intermediate tensors in prepare.c, its step boundaries in checkpoint.c; 1
 * when the file does not set it); 0 leaves that code out (a model without an LSTM: about
 * 500 B less of the MSP430's FRAM) and refuses the operator's 24 inputs and empty tensors. */
#ifndef FM_LSTM
#define FM_LSTM 1
#endif
/* A hook at the first unit of work fm_resume runs after it is called (restart measurements on
 * the targets define it as a mark); nothing by default. */
#ifndef FM_TRACE_FIRST_UNIT
#define FM_TRACE_FIRST_UNIT() ((void)0)
#endif
/* A hook at the events of an inference that the target measurements time (power_run.c defines
 * it as a call to an empty function where the emulator stops, its code in r12): a commit begins
 * (FM_EVENT_COMMIT) and ends (FM_EVENT_COMMITTED), exit point e is accumulated and decided
 * (FM_EVENT_EXIT + e). Nothing by default. */
#ifndef FM_TRACE_EVENT
#define FM_TRACE_EVENT(code) ((void)0)
#endif
#define FM_EVENT_COMMIT 1u
#define FM_EVENT_COMMITTED 2u
#define FM_EVENT_EXIT 0x100u
/* FM_PREPARE_FLOAT 1 (hosts): prepare computes the requantization parameters from the float
 * scales (double arithmetic, as TFLite Micro does) and, when the model carries them precomputed
 * ("freeml_prepare" metadata, precomputed.c), refuses a model whose values differ. 0 (the
 * targets: no floating point in prepare, no software double arithmetic in the image): prepare
 * takes them from the metadata only and refuses a model without it. */
#ifndef FM_PREPARE_FLOAT
#define FM_PREPARE_FLOAT 1
#endif
/* FM_PREPARE_ON_DEVICE 0: a device build that runs only from a prepared image (fm_persist.h)
 * sealed by a build that prepares, with the same structures, kernel table (the same kernels in
 * the same order), blocks and step configuration: nothing of parsing, preparation or step
 * planning is linked (about 23 KB of the MSP430 build of cnn_s with its exit head). fm_power_on
 * without a matching image fails with FM_ERR_UNSUPPORTED and writes nothing; the seal's kernel
 * table address is not compared (the preparing build is another firmware); fm_init and
 * fm_init_subgraph refuse every operator (FM_ERR_UNSUPPORTED), fm_resume and fm_plan_steps need
 * the image's plan. 1 (the default): everything as described elsewhere. */
#ifndef FM_PREPARE_ON_DEVICE
#define FM_PREPARE_ON_DEVICE 1
#endif
/* A kernel's prepare in its fm_kernel table entry: NULL in a build that cannot prepare. */
#define FM_KERNEL_PREPARE(f) (FM_PREPARE_ON_DEVICE ? (f) : NULL)
/* FM_EVAL_ON_DEVICE 0: a build that only prepares and seals images for a build without
 * preparation (the provisioning step on a device too small for both; fm_step must not be
 * called): the kernels' eval entries are NULL and their code is not linked. */
#ifndef FM_EVAL_ON_DEVICE
#define FM_EVAL_ON_DEVICE 1
#endif
#define FM_KERNEL_EVAL(f) (FM_EVAL_ON_DEVICE ? (f) : NULL)
/* The type of a real-valued rescaling factor in prepare: double where it is computed, an unused
 * int otherwise (so that the call sites compile without floating point). */
#if FM_PREPARE_FLOAT
#define FM_PREPARE_REAL double
#else
#define FM_PREPARE_REAL int32_t
#endif

/* ---- bounds-checked flatbuffer reader (reader.c) ------------------------------------------ */

/* A flatbuffer and a sticky error: after the first bad offset every read returns 0 and err
 * stays set with the offending position, so callers check once after a group of reads. */
typedef struct {
    const uint8_t *buf;
    uint32_t len;
    uint8_t err;
    uint32_t err_pos;
} fm_fb;

uint32_t fb_root(fm_fb *fb);
/* Position of field `id` of the table at `table`, 0 if absent (size = bytes the field takes). */
uint32_t fb_field(fm_fb *fb, uint32_t table, uint16_t id, uint32_t size);
int32_t fb_i32(fm_fb *fb, uint32_t table, uint16_t id, int32_t def);
uint32_t fb_u32(fm_fb *fb, uint32_t table, uint16_t id, uint32_t def);
int32_t fb_i8(fm_fb *fb, uint32_t table, uint16_t id, int32_t def);
uint32_t fb_u8(fm_fb *fb, uint32_t table, uint16_t id, uint32_t def);
float fb_f32(fm_fb *fb, uint32_t table, uint16_t id, float def);
int32_t fb_u64_nonzero(fm_fb *fb, uint32_t table, uint16_t id);
/* Builtin operator code of an OperatorCode table (the larger of its two code fields). */
FM_NOINLINE int32_t fm_builtin_code(fm_fb *fb, uint32_t ct);
/* Table referenced by field `id`, 0 if absent. */
uint32_t fb_table(fm_fb *fb, uint32_t table, uint16_t id);
/* Vector referenced by field `id`: position of its first element, element count in *count;
 * 0 (count 0) if absent. Checks that count * elem_size bytes are inside the buffer. */
uint32_t fb_vector(fm_fb *fb, uint32_t table, uint16_t id, uint32_t elem_size, uint32_t *count);
/* Table at element i of a vector of tables starting at vec. */
uint32_t fb_vec_table(fm_fb *fb, uint32_t vec, uint32_t i);
/* Little-endian loads at a position already checked to be inside the buffer. */
uint32_t fm_ld_u32(const uint8_t *p);
uint16_t fm_ld_u16(const uint8_t *p);
float fm_ld_f32(const uint8_t *p);
int32_t fb_vec_i32(const fm_fb *fb, uint32_t vec, uint32_t i);
/* Position and length (*data_len) of the buffer of the model's metadata entry `name`, 0 (and 0)
 * when there is none or the tables around it are malformed. */
uint32_t fb_metadata(const uint8_t *model, uint32_t len, const char *name, uint32_t name_len,
                     uint32_t *data_len);

/* The model's `freeml` metadata (fm_exit.h): the start of its buffer (*n bytes), NULL when there
 * is none or its header is not version 1 or 2; *stride is the operator record size (16 for v1,
 * 20 for v2) when the operator records lie inside the buffer after a 32-byte header, 0
 * otherwise (exit_head.c also checks the header size and the exit records). */
const uint8_t *fm_freeml_metadata(const uint8_t *model, uint32_t len, uint32_t *n, uint32_t *stride);

/* ---- tensors and operators ---------------------------------------------------------------- */

#define FM_T_CONST 1u
#define FM_T_SPARSE 2u
#define FM_T_PLANNED 4u
#define FM_T_USED 8u
#define FM_T_BADTYPE 16u            /* a type this runtime has no element size for */
#define FM_T_VARIABLE 32u           /* a variable tensor (operator state) */
#define FM_T_RESOURCE 64u           /* a RESOURCE tensor: a resource variable (kernels/variables.c) */
#define FM_T_VAR_FILL 128u          /* RESOURCE: its default fill (zero_point) is known */

/* A RESOURCE tensor (VAR_HANDLE's output) is the storage of a resource variable: state that
 * lives in the arena across inferences (the planner gives its root a lifetime over the whole
 * graph and ALIGN4(bytes) + 4 bytes: the value, then a word that says it was initialized).
 * Its fields: bytes = the value's size (0 until READ_VARIABLE or ASSIGN_VARIABLE gives it),
 * seg = its initial value in the model (CALL_ONCE's init subgraph; NULL: filled with the low
 * byte of zero_point, as TFLite Micro does), alias = the first VAR_HANDLE of the same name. */
struct fm_tensor {
    const uint8_t *cdata;       /* constant data inside the model, NULL for activations */
    const uint8_t *scales;      /* per-channel float32 scales (little-endian, in the model) */
    const uint8_t *seg;         /* CSR segments (rows + 1 entries) and column indices (nnz) */
    const uint8_t *idx;
    int32_t offset;             /* arena offset of an activation, -1 if none */
    uint32_t bytes;             /* bytes of the dense tensor (sparse: of its non-zero values) */
    uint32_t nnz;
    float scale;
    int32_t zero_point;
    uint16_t dims[FM_MAX_DIMS]; /* each 1 .. 65535 */
    uint16_t num_scales;
    int16_t alias;              /* tensor whose memory this one is (RESHAPE, DENSIFY), -1 if none */
    int16_t first;              /* lifetime: first and last operator that touches it */
    int16_t last;
    uint8_t ndim;
    uint8_t type;
    uint8_t flags;
    uint8_t seg_w;              /* CSR: bytes per segment offset / column index (1, 2, 4) */
    uint8_t idx_w;
    uint8_t quant_dim;
};

typedef struct {
    int32_t stride_h, stride_w, dil_h, dil_w, pad_h, pad_w, depth_mult;
    int32_t in_off;
    fm_out_range out;           /* output zero point and activation range (fm_requant_s8) */
    int32_t in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, k_c;
    int32_t *mult, *acc0;       /* per output channel: multiplier, bias + in_off * sum(w) */
    int8_t *shift;
} fm_conv_params;

typedef struct {
    int32_t in_off;
    fm_out_range out;
    int32_t batches, depth, out_c;
    int32_t *mult;
    int8_t *shift;
} fm_fc_params;

typedef struct {
    int32_t stride_h, stride_w, f_h, f_w, pad_h, pad_w, act_min, act_max;
    int32_t in_h, in_w, out_h, out_w, channels;
} fm_pool_params;

/* SOFTMAX: exp of each possible input difference k = max - x (0 .. 255), tabulated by the
 * converter in the freeml_prepare words and read in place (kernels/softmax.c): exp_hi / exp_lo
 * the Q0.31 exp's two halves for k < n_exp; small[k] for k < n_small the rest of its Q12.19 term
 * (rounded exp / 2^12 - 16 * exp_hi for k < n_exp, the whole term after). Differences from
 * n_small on add nothing and give -128. n_exp -1: no table (a model without freeml_prepare on a
 * build that computes its parameters: each class's exp computed in eval). */
typedef struct {
    int32_t input_multiplier, input_left_shift, diff_min, rows, depth;
    const uint16_t *exp_hi, *exp_lo;    /* (offsets fixed: hwmult_asm.S reads them) */
    const uint8_t *small;
    int16_t n_exp, n_small;
    uint8_t out16;              /* int16 output (scale 1/65536, zero point -32768) */
} fm_softmax_params;

typedef struct {
    int32_t in1_off, in2_off, out_off, left_shift;
    int32_t in1_mult, in1_shift, in2_mult, in2_shift, out_mult, out_shift;
    int32_t act_min, act_max;
    int32_t count;                            /* output elements */
    int32_t out_dims[4], str1[4], str2[4];    /* broadcast: strides (0 on broadcast dims) */
} fm_add_params;

typedef struct {
    int32_t mult, shift, in_zp, out_zp, count;
    int32_t dims[4], reduce[4];               /* input as 4-D, 1 where reduced */
    int32_t outputs;
} fm_mean_params;

typedef struct {
    int32_t mult, shift, in_zp, out_zp, count;
    float scale;
} fm_requant_params;

typedef struct {
    int32_t outer, out_row;                   /* rows before the axis, output bytes per row */
} fm_concat_params;

typedef struct {
    int32_t in_zp, mult, shift, radius, count; /* LOGISTIC: input in Q4.27, |x - zp| < radius */
} fm_logistic_params;
/* Prepare of LOGISTIC and TANH after their own output checks: the input rescaled to Q4.27 (its
 * multiplier, shift and saturation radius, precomputed on the targets), zero point, units. */
fm_status fm_q427_input(fm_interp *it, uint16_t opi, fm_op *op, const fm_tensor *in, const fm_tensor *out);
/* Their eval: f (fm_logistic_fixed, fm_tanh_fixed) of the Q4.27 input, taken to int8 by a
 * rounding shift right by `exponent` and `offset` added; inputs beyond the radius saturate. */
void fm_q427_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end,
                  int32_t (*f)(int32_t, int32_t), int32_t exponent, int32_t offset);

typedef struct {
    int32_t subgraph;                         /* CALL_ONCE: the init subgraph */
} fm_call_once_params;

/* SVDF (kernels/svdf.c): batches, input size, filters, memory, rank, units; zero points; the
 * two rescalings; bytes per state element (int8 or int16 state and time weights). */
typedef struct {
    int32_t batch, input, filters, memory, rank, units;
    int32_t in_zp, st_zp, out_zp, mult1, shift1, mult2, shift2;
    uint8_t elem;
} fm_svdf_params;

/* UNIDIRECTIONAL_SEQUENCE_LSTM (kernels/lstm.c): the requantizations, kept in the state block
 * (fm_lstm_params.q): per gate g (0 input, 1 forget, 2 cell, 3 output) the input product
 * (fc[2g]) and the recurrent product (fc[2g + 1]) to Q3.12; the three element-wise products
 * (forget x cell, input x cell gate, output x tanh(cell)). */
typedef struct {
    int32_t fc_mult[8], mul_mult[3];
    int8_t fc_shift[8], mul_shift[3];
} fm_lstm_q;

/* The LSTM's 24 inputs (TFLite's order; -1 absent: op->in holds the first FM_MAX_OP_INPUTS),
 * its shape as R rows of a sequential step (batch-major: one, time-major: the batch) times
 * `steps` sequential steps, and the cell state's fixed-point parameters. */
typedef struct {
    int16_t t[24];
    uint8_t count;                            /* inputs the operator has */
    uint8_t time_major;
    int8_t tanh_shift;                        /* tanh of the cell: 3 << shift, or 3 >> -shift */
    int16_t clip;                             /* quantized cell clip, -1: none */
    int32_t batch, time, input, state, rows, steps;
    int32_t in_zp, h_zp;
    fm_lstm_q *q;
} fm_lstm_params;

/* SPLIT and SPLIT_V: outputs (op->in[first] ..) cut from each of `outer` input rows. */
typedef struct {
    int32_t outer, in_row;                    /* rows before the axis, input bytes per row */
    uint8_t first;                            /* index in op->in of the first output */
} fm_split_params;

/* UNPACK: its outputs (the first is also op->out), cut from each of `outer` input rows. */
#define FM_UNPACK_MAX 32
typedef struct {
    int16_t out[FM_UNPACK_MAX];
    int32_t outer, row;                       /* rows before the axis, bytes per output row */
    uint8_t num;                              /* outputs */
} fm_unpack_params;

/* RESIZE_NEAREST_NEIGHBOR (kernels/resize_nearest_neighbor.c): the source row of each output
 * row and column of each output column (freeml_prepare words in the model, NULL: computed).
 * RESIZE_BILINEAR (kernels/resize_bilinear.c): the 10-bit fixed-point scales. */
typedef struct {
    const uint8_t *map;
    int32_t batch, in_h, in_w, out_h, out_w, pixel;   /* (pixel: bytes of one pixel's channels) */
    int32_t scale_h, scale_w;
    uint8_t align, half;
} fm_resize_params;

/* PAD (to 4-D), TRANSPOSE and STRIDED_SLICE: the output walked as 4-D rows of dims[3] elements,
 * each read from the input at start[d] + i * step[d] (in elements) along output dimension d. */
typedef struct {
    int32_t dims[4];                          /* output dimensions as 4-D */
    int32_t start[4], step[4];                /* STRIDED_SLICE, TRANSPOSE: input position / stride */
    int32_t in_dims[4], before[4];            /* PAD: input dimensions and leading padding */
    int32_t value;                            /* PAD: the padding value */
    uint8_t elem;                             /* bytes per element */
} fm_copy_params;

struct fm_op {
    int32_t code;
    uint32_t opts;              /* model position of the builtin options table, 0 if none */
    uint32_t units;
    int32_t scratch_off;        /* arena offset of the op's scratch, -1 if none */
    uint32_t scratch_bytes;
    int16_t in[FM_MAX_OP_INPUTS];
    int16_t out;
    uint8_t num_in;
    uint8_t kernel;
    uint32_t step_units;        /* intermittent runtime: most units of this operator per atomic
                                 * step (fm_plan_ops; 0 until planned) */
    uint32_t unit_cost;         /* metadata cost of one unit (rounded up), 0 when unknown */
    union {
        fm_conv_params conv;
        fm_fc_params fc;
        fm_pool_params pool;
        fm_softmax_params softmax;
        fm_add_params add;
        fm_mean_params mean;
        fm_requant_params rq;
        fm_concat_params concat;
        fm_logistic_params logistic;
        fm_copy_params copy;
        fm_call_once_params once;
        fm_split_params split;
        fm_svdf_params svdf;
        fm_lstm_params lstm;
        fm_unpack_params unpack;
        fm_resize_params resize;
    } p;
};

/* Each operator's record in the state block is its header and only the union member its code
 * uses (FM_OP_PARAMS; codes not listed: the header alone). Most operators of a model are
 * RESHAPE, QUANTIZE, pooling or CONCATENATION, whose parameters are a fraction of the largest
 * member (ADD's): with whole records the demo's MSP430 state spent about 2 KB on unused union
 * bytes. A kernel reads and writes only its own member; the records are reached through the
 * pointer table it->op_at (FM_OP). */
#define FM_OP_PARAMS(X)                                                                            \
    X(FM_OP_CONV_2D, conv) X(FM_OP_DEPTHWISE_CONV_2D, conv) X(FM_OP_TRANSPOSE_CONV, conv)         \
    X(FM_OP_FULLY_CONNECTED, fc) X(FM_OP_MAX_POOL_2D, pool) X(FM_OP_AVERAGE_POOL_2D, pool)        \
    X(FM_OP_SOFTMAX, softmax) X(FM_OP_ADD, add) X(FM_OP_SUB, add) X(FM_OP_MUL, add)               \
    X(FM_OP_MAXIMUM, add) X(FM_OP_MINIMUM, add) X(FM_OP_MEAN, mean) X(FM_OP_QUANTIZE, rq)         \
    X(FM_OP_DEQUANTIZE, rq) X(FM_OP_RELU, rq) X(FM_OP_CONCATENATION, concat)                       \
    X(FM_OP_LOGISTIC, logistic) X(FM_OP_TANH, logistic) X(FM_OP_PAD, copy) X(FM_OP_PADV2, copy)   \
    X(FM_OP_TRANSPOSE, copy) X(FM_OP_STRIDED_SLICE, copy) X(FM_OP_CALL_ONCE, once)                 \
    X(FM_OP_SPLIT, split) X(FM_OP_SPLIT_V, split) X(FM_OP_SVDF, svdf)                              \
    X(FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM, lstm) X(FM_OP_UNPACK, unpack)                            \
    X(FM_OP_RESIZE_NEAREST_NEIGHBOR, resize) X(FM_OP_RESIZE_BILINEAR, resize)

/* Bytes of a record with union member m (FM_OP_HEADER_BYTES: none), rounded up to fm_op's
 * alignment so that records placed one after another keep their pointers aligned; constant
 * expressions (targets.image.struct_sizes reads them from the compiler). */
typedef struct {
    uint8_t c;
    fm_op op;
} fm_op_align_probe;
#define FM_OP_ALIGN ((uint32_t)offsetof(fm_op_align_probe, op))
#define FM_OP_ROUND(n) (((uint32_t)(n) + FM_OP_ALIGN - 1u) / FM_OP_ALIGN * FM_OP_ALIGN)
#define FM_OP_HEADER_BYTES FM_OP_ROUND(offsetof(fm_op, p))
#define FM_OP_RECORD(m) FM_OP_ROUND(offsetof(fm_op, p) + sizeof(((fm_op *)0)->p.m))
/* Operator i of interpreter it (a fm_op *). */
#define FM_OP(it, i) ((it)->op_at[i])

/* A kernel: prepare validates and computes parameters (may allocate state, request scratch);
 * eval runs units [begin, end) and cannot fail. */
typedef struct {
    int32_t code;
    fm_status (*prepare)(fm_interp *it, uint16_t opi, fm_op *op);
    void (*eval)(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end);
    uint16_t record;            /* bytes of its operators' records: FM_OP_RECORD(its member of
                                 * FM_OP_PARAMS), FM_OP_HEADER_BYTES without parameters */
} fm_kernel;

extern const fm_kernel *const fm_kernels[];

/* Prepare of the 2-D pooling kernels (kernels/pooling.c): options, window, padding, range. */
fm_status fm_pool_prepare(fm_interp *it, uint16_t opi, fm_op *op);
extern const uint16_t fm_num_kernels;

/* Builtin operator codes (TFLite BuiltinOperator). */
enum {
    FM_OP_ADD = 0, FM_OP_AVERAGE_POOL_2D = 1, FM_OP_CONCATENATION = 2, FM_OP_CONV_2D = 3,
    FM_OP_DEPTHWISE_CONV_2D = 4, FM_OP_DEQUANTIZE = 6, FM_OP_FULLY_CONNECTED = 9,
    FM_OP_LOGISTIC = 14, FM_OP_RELU = 19, FM_OP_TANH = 28, FM_OP_TRANSPOSE_CONV = 67, FM_OP_RESIZE_NEAREST_NEIGHBOR = 97, FM_OP_RESIZE_BILINEAR = 23, FM_OP_UNPACK = 88, FM_OP_SVDF = 27, FM_OP_MAX_POOL_2D = 17, FM_OP_MUL = 18, FM_OP_RESHAPE = 22,
    FM_OP_SOFTMAX = 25, FM_OP_PAD = 34, FM_OP_TRANSPOSE = 39, FM_OP_MEAN = 40, FM_OP_SUB = 41,
    FM_OP_SQUEEZE = 43, FM_OP_STRIDED_SLICE = 45, FM_OP_SPLIT = 49, FM_OP_SPLIT_V = 102, FM_OP_MAXIMUM = 55, FM_OP_MINIMUM = 57,
    FM_OP_UNIDIRECTIONAL_SEQUENCE_LSTM = 44, FM_OP_PADV2 = 60, FM_OP_EXPAND_DIMS = 70, FM_OP_QUANTIZE = 114, FM_OP_DENSIFY = 124,
    FM_OP_CALL_ONCE = 129, FM_OP_VAR_HANDLE = 142, FM_OP_READ_VARIABLE = 143, FM_OP_ASSIGN_VARIABLE = 144
};

/* A loop counter over a dimension or a count of bytes in memory: 16 bits on 16-bit targets (the
 * MSP430: int32 counters are two-word compares and increments; no tensor there reaches 2^15
 * elements per dimension), the native width elsewhere. */
typedef int_fast16_t fm_count;

/* a + b with two's-complement wrap-around (TFLite Micro's behaviour) and no undefined
 * behaviour when a corrupt bias makes it overflow. */
#define FM_WRAP_ADD(a, b) ((int32_t)((uint32_t)(a) + (uint32_t)(b)))
/* w * x for an int8 weight w and an offset int8 input x (|x| <= 255): |w * x| <= 2^15 - 128, so a
 * 16-bit multiply is exact (one hardware multiply on 16-bit targets, not a 32-bit helper). */
#define FM_MAC16(w, x) ((int32_t)(int16_t)((int16_t)(w) * (int16_t)(x)))

/* ---- helpers shared by the kernels (interpreter.c) ---------------------------------------- */

/* Record an error (message, operator, tensor, value) and return s. A build with FM_ERROR_TEXT 0
 * (the MSP430 target's) keeps everything but the message text: about 3 KB less FRAM, and call
 * sites with one argument less. Never inlined (FM_NOINLINE, fm_math.h): its many call sites
 * are on error paths only. */
#ifndef FM_ERROR_TEXT
#define FM_ERROR_TEXT 1
#endif
FM_NOINLINE fm_status fm_fail_at(fm_interp *it, fm_status s, const char *msg, int16_t op, int16_t tensor,
                                 int32_t value);
FM_NOINLINE fm_status fm_fail_code(fm_interp *it, fm_status s, int16_t op, int16_t tensor, int32_t value);
/* A format error at the flatbuffer reader's error position (its message is set by the caller). */
FM_NOINLINE fm_status fm_format_error_at(fm_interp *it, const fm_fb *fb, int16_t op, int16_t tensor);
#if FM_ERROR_TEXT
#define FM_MSG(msg) (msg)
#define fm_fail(it, s, msg, op, tensor, value) \
    fm_fail_at((it), (s), (msg), (int16_t)(op), (int16_t)(tensor), (value))
#else
#define FM_MSG(msg) ((void)(msg), (const char *)0)
#define fm_fail(it, s, msg, op, tensor, value) \
    ((void)(msg), fm_fail_code((it), (s), (int16_t)(op), (int16_t)(tensor), (value)))
#endif
/* Allocate n bytes (4-aligned) of state memory; NULL (and an error set) if it does not fit. */
void *fm_state_alloc(fm_interp *it, uint32_t n);
const fm_tensor *fm_root(const fm_interp *it, int16_t t);
uint8_t *fm_data(const fm_interp *it, int16_t t);
int32_t fm_elements(const fm_tensor *t);
/* Per-channel scale c of t (or its single scale). */
float fm_channel_scale(const fm_tensor *t, uint32_t c);
/* Check that op input i exists, is int8 (or `type`), and return it. */
fm_status fm_expect(fm_interp *it, uint16_t opi, int16_t t, uint8_t type, const fm_tensor **out);
/* Check that t is int8 constant weights (dense or CSR through DENSIFY): *out is the tensor
 * itself (shape, quantization), *data the tensor holding the data (possibly sparse). */
fm_status fm_expect_weights(fm_interp *it, uint16_t opi, int16_t t, const fm_tensor **out,
                            const fm_tensor **data);
/* The operands of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: int8 input, weights (see
 * fm_expect_weights), int8 output and an optional constant int32 bias with one value per
 * output channel (*bias NULL when absent; fm_check_bias checks its size once out_c is known). */
fm_status fm_weighted_operands(fm_interp *it, uint16_t opi, const fm_op *op, const fm_tensor **in,
                               const fm_tensor **f, const fm_tensor **fd, const fm_tensor **out,
                               const fm_tensor **bias);
fm_status fm_check_bias(fm_interp *it, uint16_t opi, const fm_op *op, const fm_tensor *bias, int32_t out_c);
/* CSR segment offset r of sparse tensor t. */
uint32_t fm_seg(const fm_tensor *t, uint32_t r);
/* Fused activation range of an int8 output (TFLite ActivationFunctionType). */
fm_status fm_activation_range(fm_interp *it, uint16_t opi, int32_t act, const fm_tensor *out,
                              int32_t *mn, int32_t *mx);
/* Per output channel multiplier and shift of in * filter / out (per_tensor_product: one scale,
 * multiplied in float first as TFLite's FULLY_CONNECTED does). */
fm_status fm_conv_multipliers(fm_interp *it, uint16_t opi, const fm_tensor *in,
                              const fm_tensor *filter, const fm_tensor *out, int32_t channels,
                              uint8_t per_tensor_product, int32_t **mult, int8_t **shift);

/* ---- precomputed requantization parameters (precomputed.c) --------------------------------
 *
 * Metadata entry "freeml_prepare" (freeml_keras/format/prepared.py writes it), little-endian:
 *   0  "FMLP"   4  u16 version 2   6  u16 S subgraph records   8  u32 model id (FNV-1a of the
 *   file with these 4 bytes 0)   12  u32 0;  16: S records (u16 subgraph, u16 operators N,
 *   u32 offset of its operator table); operator table: N records (u32 offset of the
 *   operator's int32 words, u32 number of words). A kernel's prepare takes its words in the
 *   order it would compute them (fm_pre_value): CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED:
 *   act_min, act_max, then multiplier and shift per output channel; pooling: act_min,
 *   act_max; ADD: act_min, act_max and three (multiplier, shift) pairs; SOFTMAX: multiplier,
 *   left shift, diff_min, n_exp | n_small << 16, the exp table (kernels/softmax.c); MEAN and int8
 *   QUANTIZE: multiplier, shift. */
/* Find the entry for `subgraph` (it->pre_blob NULL when the model has none); FM_ERR_FORMAT when
 * it is there but malformed or made for another graph. */
fm_status fm_pre_find(fm_interp *it, uint16_t subgraph, uint32_t num_ops);
/* Point at operator opi's words before its prepare; check after it that all were taken and
 * none differed (with FM_PREPARE_FLOAT) from what the prepare computed. */
void fm_pre_begin(fm_interp *it, uint16_t opi);
fm_status fm_pre_end(fm_interp *it, uint16_t opi);
/* The next n words of the operator being prepared, in place (4-byte aligned in the model), NULL
 * when the model has no entry or fewer words are left (then fm_pre_end fails). */
const uint8_t *fm_pre_words(fm_interp *it, uint32_t n);
/* Record that a precomputed value differs from the one prepare computed (fm_pre_end fails). */
void fm_pre_differs(fm_interp *it);
/* The next precomputed value of the operator being prepared; `computed` is what the float
 * prepare computed (ignored with FM_PREPARE_FLOAT 0). Errors are sticky until fm_pre_end. */
int32_t fm_pre_value(fm_interp *it, int32_t computed);
/* acc0[c] = bias[c] + in_off * (sum of the weights of output channel c), for weights laid out
 * as `channels` blocks of `rows` rows (CSR rows when sparse) of `row_len` values. */
fm_status fm_channel_offsets(fm_interp *it, const fm_tensor *w, const int32_t *bias,
                             int32_t in_off, int32_t channels, int32_t rows, int32_t row_len,
                             int32_t **acc0);
fm_status fm_same_quant(fm_interp *it, uint16_t opi, const fm_tensor *a, const fm_tensor *b);
/* The bits of a float, and float equality (a == b) decided on them: the targets' builds compare
 * scales without floating-point arithmetic (no software float linked). */
uint32_t fm_f32_bits(float f);
uint8_t fm_same_scale(float a, float b);
#define FM_F32_ONE_256 0x3B800000ul     /* 1 / 256, the int8 SOFTMAX output scale */
#define FM_F32_ONE_65536 0x37800000ul   /* 1 / 65536, the int16 one (from int8 input) */
/* Output size check and leading padding of one spatial dimension (padding 0 SAME, 1 VALID). */
fm_status fm_window(fm_interp *it, uint16_t opi, int32_t padding, int32_t in, int32_t k,
                    int32_t stride, int32_t dil, int32_t out, int32_t *pad);
/* Two operands broadcast to the output (each up to 4-D, dimensions aligned on the right):
 * out_dims, the output as 4-D, and each operand's element strides (0 on a dimension it
 * broadcasts). */
fm_status fm_broadcast(fm_interp *it, uint16_t opi, const fm_tensor *a, const fm_tensor *b,
                       const fm_tensor *out, int32_t *out_dims, int32_t *str1, int32_t *str2);
/* A walk over the output of a broadcasting operator: the output position as 4-D and the
 * operands' element indices (fm_broadcast's strides). fm_bcast_start places it at output element
 * u (divisions, once per call of eval); fm_bcast_run and fm_bcast_skip below step through it
 * (additions). */
typedef struct {
    int32_t c[4], ia, ib;
} fm_bcast_pos;
void fm_bcast_start(const fm_add_params *p, uint32_t u, fm_bcast_pos *pos);
/* Elements from pos to the end of its innermost output row, at most `left`; then
 * fm_bcast_skip moves pos past n <= that many (the element-wise kernels walk the output in such
 * runs, the operands at constant strides inside one). */
static inline uint32_t fm_bcast_run(const fm_add_params *p, const fm_bcast_pos *pos, uint32_t left)
{
    const uint32_t n = (uint32_t)(p->out_dims[3] - pos->c[3]);
    return n < left ? n : left;
}
static inline void fm_bcast_skip(const fm_add_params *p, fm_bcast_pos *pos, uint32_t n)
{
    int32_t d = 3;
    pos->ia += p->str1[3] * (int32_t)n;
    pos->ib += p->str2[3] * (int32_t)n;
    pos->c[3] += (int32_t)n;
    while (pos->c[d] == p->out_dims[d] && d > 0) {
        pos->ia -= p->str1[d] * p->out_dims[d];
        pos->ib -= p->str2[d] * p->out_dims[d];
        pos->c[d] = 0;
        d--;
        pos->c[d]++;
        pos->ia += p->str1[d];
        pos->ib += p->str2[d];
    }
}
/* The fused activation (byte 0 of the options table: ADD, SUB, MUL) as an int8 range. */
fm_status fm_options_activation(fm_interp *it, uint16_t opi, const fm_op *op, const fm_tensor *out,
                                int32_t *mn, int32_t *mx);
/* A constant int32 vector operand of n values (paddings, begin / end / strides, a permutation). */
fm_status fm_const_i32(fm_interp *it, uint16_t opi, int16_t t, int32_t n, const int32_t **v);
/* Eval of fm_copy_params kernels (STRIDED_SLICE, TRANSPOSE): output rows [begin, end). */
void fm_copy_eval(const fm_interp *it, const fm_op *op, uint32_t begin, uint32_t end);
/* Make tensor `out` share the memory of tensor `in` (RESHAPE-like ops). */
void fm_alias(fm_interp *it, int16_t out, int16_t in);

/* Operator state in the arena (resource variables, variable tensors): after the value, at
 * FM_ALIGN4(bytes), a word equal to fm_state_ready(it) once the value was initialized for this
 * model (a value from NVM left by another model, or never written, is initialized again). */
uint32_t fm_state_ready(const fm_interp *it);
volatile uint32_t *fm_state_word(const fm_interp *it, const fm_tensor *t);

/* n rounded up to a multiple of 4 (state allocations). */
#define FM_ALIGN4(n) (((uint32_t)(n) + 3u) & ~3u)

/* Static arena plan of the prepared operators (planner.c): offsets, it->arena_needed. */
fm_status fm_plan(fm_interp *it);

#endif
