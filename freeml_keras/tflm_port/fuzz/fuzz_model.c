/* libFuzzer target: any byte string given as a model must be refused with an error or run to the
 * end; never read or write out of bounds. Build: make fuzz; run: build/fm_fuzz -max_total_time=600
 * corpus/ (seed the corpus with converted .tflite files). */
#include <string.h>

#include "freeml/fm.h"

#define MAX_STATE (256u << 10)
#define MAX_ARENA (1u << 20)

static uint8_t model[1u << 20] __attribute__((aligned(16)));
static uint8_t state[MAX_STATE] __attribute__((aligned(16)));
static uint8_t arena[MAX_ARENA] __attribute__((aligned(16)));

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_interp it;
    uint8_t i;
    if (size > sizeof model) return 0;
    memcpy(model, data, size);   /* aligned copy, as a caller must provide */
    if (fm_init(&it, model, (uint32_t)size, state, MAX_STATE, arena, MAX_ARENA) != FM_OK) return 0;
    for (i = 0; i < fm_num_inputs(&it); i++)
        memset(fm_tensor_data(&it, fm_input(&it, i)), 7, fm_tensor_bytes(&it, fm_input(&it, i)));
    if (fm_invoke(&it) != FM_OK) __builtin_trap();
    return 0;
}
