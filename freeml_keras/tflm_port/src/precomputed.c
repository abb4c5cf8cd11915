/* Precomputed requantization parameters: the "freeml_prepare" metadata entry (format in
 * fm_internal.h). With them, preparing a model needs no floating point (the targets' builds,
 * FM_PREPARE_FLOAT 0); hosts compute the values too and refuse a model whose values differ. */
#include <string.h>

#include "freeml/fm_internal.h"

enum { PRE_NONE = 0, PRE_MISSING = 1, PRE_COUNT = 2, PRE_DIFFER = 3 };

#define PRE_HEADER 16u
#define PRE_RECORD 8u

fm_status fm_pre_find(fm_interp *it, uint16_t subgraph, uint32_t num_ops)
{
    uint32_t n, at = fb_metadata(it->model, it->model_len, "freeml_prepare", 14u, &n), s, i;
    const uint8_t *b;
    it->pre_blob = NULL;
    it->pre_blob_len = 0;
    it->pre_ops = 0;
    it->model_id = 0;
    it->model_id_pos = 0;
    if (at == 0u) return FM_OK;                          /* none: computed (or refused) */
    b = it->model + at;
    if (n < PRE_HEADER || memcmp(b, "FMLP", 4) != 0)
        return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: bad header", -1, -1, (int32_t)n);
    if (fm_ld_u16(b + 4) != 2u) return FM_OK;            /* another version: not ours to read (1: no
                                                          * SOFTMAX table; computed or refused) */
    it->model_id = fm_ld_u32(b + 8);
    it->model_id_pos = at + 8u;
    s = fm_ld_u16(b + 6);
    if (s > (n - PRE_HEADER) / PRE_RECORD)
        return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: records out of bounds", -1, -1, (int32_t)s);
    for (i = 0; i < s; i++) {
        const uint8_t *r = b + PRE_HEADER + PRE_RECORD * i;
        uint32_t table = fm_ld_u32(r + 4), ops = fm_ld_u16(r + 2);
        if (fm_ld_u16(r) != subgraph) continue;
        if (ops != num_ops)
            return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: operator count differs from the model",
                           -1, -1, (int32_t)ops);
        if (table < PRE_HEADER || table > n || ops > (n - table) / PRE_RECORD)
            return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: operator table out of bounds", -1, -1,
                           (int32_t)table);
        it->pre_blob = b;
        it->pre_blob_len = n;
        it->pre_ops = table;
        return FM_OK;
    }
    return FM_OK;                                        /* no record for this subgraph */
}

void fm_pre_begin(fm_interp *it, uint16_t opi)
{
    it->pre_words = NULL;
    it->pre_n = 0;
    it->pre_i = 0;
    it->pre_err = PRE_NONE;
    if (it->pre_blob) {
        const uint8_t *r = it->pre_blob + it->pre_ops + PRE_RECORD * (uint32_t)opi;
        const uint32_t at = fm_ld_u32(r), n = fm_ld_u32(r + 4);
        if (n > 0u && (at % 4u != 0u || at > it->pre_blob_len || n > (it->pre_blob_len - at) / 4u)) {
            it->pre_err = PRE_COUNT;                     /* words out of bounds */
            return;
        }
        it->pre_words = it->pre_blob + at;
        it->pre_n = n;
    }
}

int32_t fm_pre_value(fm_interp *it, int32_t computed)
{
    int32_t v;
    if (it->pre_err) return 0;
    if (!it->pre_blob) {
#if FM_PREPARE_FLOAT
        return computed;
#else
        (void)computed;
        it->pre_err = PRE_MISSING;
        return 0;
#endif
    }
    if (it->pre_i >= it->pre_n) {
        it->pre_err = PRE_COUNT;
        return 0;
    }
    v = (int32_t)fm_ld_u32(it->pre_words + 4u * it->pre_i);
    it->pre_i++;
#if FM_PREPARE_FLOAT
    if (v != computed) it->pre_err = PRE_DIFFER;
#endif
    return v;
}

const uint8_t *fm_pre_words(fm_interp *it, uint32_t n)
{
    const uint8_t *w;
    if (it->pre_err || !it->pre_blob) return NULL;
    if (n > it->pre_n - it->pre_i) {
        it->pre_err = PRE_COUNT;
        return NULL;
    }
    w = it->pre_words + 4u * it->pre_i;
    it->pre_i += n;
    return w;
}

void fm_pre_differs(fm_interp *it)
{
    if (!it->pre_err) it->pre_err = PRE_DIFFER;
}

fm_status fm_pre_end(fm_interp *it, uint16_t opi)
{
    if (it->pre_err == PRE_NONE && it->pre_blob && it->pre_i != it->pre_n) it->pre_err = PRE_COUNT;
    switch (it->pre_err) {
    case PRE_MISSING:
        return fm_fail(it, FM_ERR_UNSUPPORTED, "requantization parameters are not precomputed (this build has "
                       "no floating-point prepare: convert with freeml_keras, which adds freeml_prepare)",
                       opi, -1, 0);
    case PRE_COUNT:
        return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: wrong number of values for this operator",
                       opi, -1, (int32_t)it->pre_n);
    case PRE_DIFFER:
        return fm_fail(it, FM_ERR_FORMAT, "freeml_prepare metadata: a value differs from the one the scales give",
                       opi, -1, (int32_t)it->pre_i - 1);
    default:
        return FM_OK;
    }
}
