/* Errors: the status, message, operator, tensor, model offset and value of the last failure
 * (fm_error, fm.h). */
#include "freeml/fm_internal.h"

fm_status fm_fail_code(fm_interp *it, fm_status s, int16_t op, int16_t tensor, int32_t value)
{
    it->err.msg = NULL;
    it->err.op = op;
    it->err.tensor = tensor;
    it->err.value = value;
    it->err.offset = -1;
    return s;
}

fm_status fm_fail_at(fm_interp *it, fm_status s, const char *msg, int16_t op, int16_t tensor,
                     int32_t value)
{
    fm_fail_code(it, s, op, tensor, value);
    it->err.msg = msg;
    return s;
}

/* A format error at the reader's error position (FM_ERROR_TEXT as for fm_fail). */
FM_NOINLINE fm_status fm_format_error_at(fm_interp *it, const fm_fb *fb, int16_t op, int16_t tensor)
{
    fm_fail_code(it, FM_ERR_FORMAT, op, tensor, 0);
    it->err.offset = fb->err ? (int32_t)fb->err_pos : -1;
    return FM_ERR_FORMAT;
}
