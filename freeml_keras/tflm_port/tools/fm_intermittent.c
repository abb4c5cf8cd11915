/* Host harness for intermittent execution: the NVM is a memory-mapped file, so everything the
 * process stored survives a SIGKILL exactly as FRAM survives a power failure.
 *
 *   fm_intermittent MODEL NVM new INPUT [options]   write the input, commit, run
 *   fm_intermittent MODEL NVM resume [options]      continue the committed inference
 *   fm_intermittent MODEL NVM plan [-g UNITS] [-w WORK]  print one line per operator
 *                            "op=I code=C units=U", one per atomic step "step=K op=I unit=U
 *                            units=N work=W", then "largest_step=U op=I record_bytes=R
 *                            largest_step_work=W largest_step_op=I steps=K"
 * options: -g UNITS        at most UNITS units of one operator per atomic step; alone: units
 *                           mode (one operator per step)
 *          -w WORK          work mode: at most WORK MAC-equivalents per atomic step (default:
 *                           work mode, FM_DEFAULT_STEP_WORK, no unit limit)
 *          -o OUTPUT        write the int8 output there when the inference completes
 *          -k N             SIGKILL this process at the N-th byte written by a commit
 *          -s STEPS         stop (exit 4) after this many atomic steps
 *          -x EXIT          stop at this exit point (fm_exit_now after it), if the model has an
 *                           exit head; -X FILE then receives that exit point's main tensor
 *          -T               stop when an exit's confidence reaches its metadata threshold
 *          -e JOULES        energy reading the platform reports (constant); with -m J_PER_MAC the
 *                           runtime stops at an exit when the work to the next one costs more
 *          -c J_PER_CYCLE   price that work by the metadata's per-operator costs instead (v2
 *                           metadata with a complete cost table; otherwise -m applies)
 *          -O               declare the NVM writes in address order (fm_nvm.in_order: one write
 *                           per commit; this harness's byte loop is in order)
 *          -t STATS         keep counters (u64 units run, commits completed, NVM bytes written)
 *                           in this memory-mapped file, current at every NVM write, so the
 *                           parent can read what a killed run did
 * Exit codes: 0 done, 2 usage/IO error, 3 nothing to resume, 4 stopped, 5 runtime error.
 * Prints one line: units=<run by this process> commits=<n> ckpt_bytes=<bytes written>
 * exit=<exit index answered, the number of exits for the model's own output>.
 * The output file receives the model's output, or the exit's int8 logits when it stopped early.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "freeml/fm.h"
#include "freeml/fm_checkpoint.h"

#define STATE_BYTES (1u << 20)

static unsigned long g_kill_at = 0; /* 0: never */
static unsigned long g_written = 0;
static volatile uint64_t *g_stats = NULL; /* units run, commits, checkpoint bytes */
static float g_energy = 0.0f;

static float energy_reading(void *ctx)
{
    (void)ctx;
    return g_energy;
}

/* Byte by byte, so that a kill can tear a record anywhere. */
static void nvm_write(fm_nvm *nvm, uint32_t offset, const uint8_t *src, uint32_t n)
{
    uint32_t i;
    /* The step being committed has run: count its units before a kill can tear the commit. */
    if (g_stats && nvm->ctx) {
        g_stats[0] = ((const fm_intermittent *)nvm->ctx)->units_run;
        g_stats[1] = ((const fm_intermittent *)nvm->ctx)->commits;
    }
    for (i = 0; i < n; i++) {
        g_written++;
        if (g_kill_at != 0 && g_written == g_kill_at) {
            kill(getpid(), SIGKILL);
        }
        nvm->mem[offset + i] = src[i];
    }
    if (g_stats) g_stats[2] += n;
}

static uint8_t *read_file(const char *path, uint32_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (uint8_t *)malloc(n > 0 ? (size_t)n : 1u); /* host tool: the runtime itself never allocates */
    if (buf && n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (uint32_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *model_path, *nvm_path, *mode, *input_path = NULL, *output_path = NULL, *dump_path = NULL;
    static fm_interp head;
    static fm_exit_head exits;
    static uint8_t head_arena[1u << 16];
    uint8_t *head_state;
    uint16_t head_sg;
    int16_t stop_at = -1, answer = 0;
    int8_t logits[FM_CKPT_MAX_CLASSES];
    uint8_t thresholds = 0, has_exits = 0, has_energy = 0;
    float per_mac = 0.0f, per_cycle = 0.0f;
    uint32_t model_len, gran = FM_GRANULARITY_ANY, work = FM_DEFAULT_STEP_WORK, max_steps = 0, nvm_len;
    uint32_t input_len = 0;
    uint8_t gran_set = 0, work_set = 0, in_order = 0;
    uint8_t *model, *input = NULL, *state, done = 0;
    static fm_interp it;
    fm_nvm nvm;
    fm_intermittent r;
    fm_status s;
    int argi, fd, creating;
    uint16_t num_classes;
    int16_t out_t;

    if (argc < 4) {
        fprintf(stderr, "usage: fm_intermittent MODEL NVM new INPUT|resume [-g N] [-o OUT] [-k N] [-s N]\n");
        return 2;
    }
    model_path = argv[1];
    nvm_path = argv[2];
    mode = argv[3];
    argi = 4;
    creating = !strcmp(mode, "new");
    if (creating) {
        if (argc < 5) return 2;
        input_path = argv[4];
        argi = 5;
    } else if (strcmp(mode, "resume") != 0 && strcmp(mode, "plan") != 0) {
        fprintf(stderr, "mode must be new, resume or plan\n");
        return 2;
    }
    for (; argi < argc; argi += 2) {
        if (!strcmp(argv[argi], "-T")) {
            thresholds = 1;
            argi--;
            continue;
        }
        if (!strcmp(argv[argi], "-O")) {
            in_order = 1;
            argi--;
            continue;
        }
        if (argi + 1 >= argc) {
            fprintf(stderr, "option %s needs a value\n", argv[argi]);
            return 2;
        }
        if (!strcmp(argv[argi], "-x")) stop_at = (int16_t)atoi(argv[argi + 1]);
        else if (!strcmp(argv[argi], "-X")) dump_path = argv[argi + 1];
        else if (!strcmp(argv[argi], "-e")) {
            g_energy = (float)atof(argv[argi + 1]);
            has_energy = 1;
        } else if (!strcmp(argv[argi], "-m")) per_mac = (float)atof(argv[argi + 1]);
        else if (!strcmp(argv[argi], "-c")) per_cycle = (float)atof(argv[argi + 1]);
        else if (!strcmp(argv[argi], "-g")) {
            gran = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
            gran_set = 1;
        } else if (!strcmp(argv[argi], "-w")) {
            work = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
            work_set = 1;
        }
        else if (!strcmp(argv[argi], "-o")) output_path = argv[argi + 1];
        else if (!strcmp(argv[argi], "-k")) g_kill_at = strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-s")) max_steps = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-t")) {
            int sfd = open(argv[argi + 1], O_RDWR | O_CREAT, 0644);
            if (sfd < 0 || ftruncate(sfd, 64) != 0) return 2;
            g_stats = (volatile uint64_t *)mmap(NULL, 64, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
            if ((void *)g_stats == MAP_FAILED) return 2;
            g_stats[0] = g_stats[1] = g_stats[2] = 0u;
        }
        else {
            fprintf(stderr, "unknown option %s\n", argv[argi]);
            return 2;
        }
    }
    model = read_file(model_path, &model_len);
    if (!model) {
        fprintf(stderr, "cannot read %s\n", model_path);
        return 2;
    }
    state = (uint8_t *)malloc(STATE_BYTES);
    /* First pass: learn the arena size. */
    s = fm_init(&it, model, model_len, state, STATE_BYTES, NULL, 0);
    if (s != FM_OK && s != FM_ERR_MEMORY) {
        fprintf(stderr, "model refused: %s\n", fm_last_error(&it)->msg);
        return 5;
    }
    out_t = -1;
    num_classes = 0;
    {
        uint32_t arena = fm_arena_needed(&it);
        uint32_t ckpt = fm_ckpt_bytes(FM_CKPT_MAX_CLASSES);
        nvm_len = ckpt + ((arena + 15u) & ~15u);
        fd = open(nvm_path, O_RDWR | O_CREAT, 0644);
        if (fd < 0 || ftruncate(fd, (off_t)nvm_len) != 0) {
            fprintf(stderr, "cannot open %s\n", nvm_path);
            return 2;
        }
        nvm.mem = (uint8_t *)mmap(NULL, nvm_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (nvm.mem == MAP_FAILED) return 2;
        nvm.len = nvm_len;
        nvm.write = nvm_write;
        nvm.ctx = NULL;
        nvm.in_order = in_order;
        s = fm_init(&it, model, model_len, state, STATE_BYTES, nvm.mem + ckpt, nvm_len - ckpt);
        if (s != FM_OK) {
            fprintf(stderr, "init failed: %s\n", fm_last_error(&it)->msg);
            return 5;
        }
    }
    memset(&r, 0, sizeof(r));
    nvm.ctx = &r;
    r.stop_at_exit = -1;
    s = fm_exit_find(model, model_len, &head_sg);
    if (s == FM_ERR_FORMAT) {
        fprintf(stderr, "freeml metadata malformed: its record tables do not fit the buffer\n");
        return 5;
    }
    if (s == FM_OK) {
        head_state = (uint8_t *)malloc(STATE_BYTES);
        s = fm_init_subgraph(&head, model, model_len, head_sg, head_state, STATE_BYTES, head_arena,
                             sizeof head_arena);
        if (s == FM_OK) s = fm_exit_init(&exits, &it, &head);
        if (s != FM_OK) {
            fprintf(stderr, "exit head refused: %s\n", fm_last_error(&head)->msg);
            return 5;
        }
        has_exits = 1;
        num_classes = exits.num_classes;
        r.exits = &exits;
        r.head = &head;
        r.stop_at_exit = stop_at;
        r.use_thresholds = thresholds;
        if (has_energy) {
            r.energy = energy_reading;
            r.energy_per_mac = per_mac;
            r.energy_per_cycle = per_cycle;
        }
    }
    r.it = &it;
    r.nvm = &nvm;
    r.ckpt_offset = 0;
    r.granularity = gran;
    r.step_work = gran_set && !work_set ? 0u : work;
    r.st.num_classes = num_classes;
    if (!strcmp(mode, "plan")) {
        uint16_t i, big_op;
        uint32_t big = fm_largest_step_units(&it, gran, &big_op), k, n;
        fm_step_info *steps, largest;
        n = fm_plan_steps(&r, NULL, 0u, &largest);
        steps = (fm_step_info *)malloc((n ? n : 1u) * sizeof *steps);
        if (!steps || fm_plan_steps(&r, steps, n, &largest) != n) return 2;
        for (i = 0; i < fm_num_ops(&it); i++) {
            printf("op=%u code=%d units=%u\n", (unsigned)i, (int)fm_op_code(&it, i),
                   (unsigned)fm_op_units(&it, i));
        }
        for (k = 0; k < n; k++) {
            printf("step=%u op=%u unit=%u units=%u work=%u\n", (unsigned)k, (unsigned)steps[k].op,
                   (unsigned)steps[k].unit, (unsigned)steps[k].units, (unsigned)steps[k].work);
        }
        if (r.step_work > 0u) {        /* the largest step of this configuration, in units */
            big = largest.units;
            big_op = largest.op;
        }
        printf("largest_step=%u op=%u record_bytes=%u largest_step_work=%u largest_step_op=%u steps=%u\n",
               (unsigned)big, (unsigned)big_op, (unsigned)(FM_CKPT_HEADER_BYTES + 4u * num_classes),
               (unsigned)largest.work, (unsigned)largest.op, (unsigned)n);
        return 0;
    }
    if (creating) {
        int16_t in_t = fm_input(&it, 0);
        input = read_file(input_path, &input_len);
        if (!input || input_len != fm_tensor_bytes(&it, in_t)) {
            fprintf(stderr, "input must be %u bytes\n", (unsigned)fm_tensor_bytes(&it, in_t));
            return 2;
        }
        s = fm_prepare_input(&r);
        if (s) return 5;
        nvm_write(&nvm, (uint32_t)(fm_tensor_data(&it, in_t) - nvm.mem), input, input_len);
        s = fm_start(&r);
        if (s) return 5;
    }
    s = fm_resume(&r, max_steps, &done);
    if (g_stats) {
        g_stats[0] = r.units_run;
        g_stats[1] = r.commits;
    }
    if (s == FM_OK && done) s = fm_answer(&r, &answer, logits);
    printf("units=%u commits=%u ckpt_bytes=%lu exit=%d\n", (unsigned)r.units_run, (unsigned)r.commits,
           (unsigned long)r.commits * (FM_CKPT_HEADER_BYTES + 4u * num_classes), (int)answer);
    if (s == FM_ERR_STATE) return 3;
    if (s) {
        fprintf(stderr, "runtime error: %s\n", fm_last_error(&it)->msg);
        return 5;
    }
    if (!done) return 4;
    out_t = fm_output(&it, 0);
    if (output_path) {
        FILE *f = fopen(output_path, "wb");
        const uint8_t *data = (const uint8_t *)fm_tensor_data(&it, out_t);
        uint32_t bytes = fm_tensor_bytes(&it, out_t);
        if (has_exits && answer < (int16_t)exits.num_exits) {
            data = (const uint8_t *)logits;
            bytes = exits.num_classes;
        }
        if (!f || fwrite(data, 1, bytes, f) != bytes) return 2;
        fclose(f);
    }
    if (dump_path && has_exits && answer < (int16_t)exits.num_exits) {
        FILE *f = fopen(dump_path, "wb");
        int16_t t = exits.main_tensor[answer];
        if (!f || fwrite(fm_tensor_data(&it, t), 1, fm_tensor_bytes(&it, t), f) != fm_tensor_bytes(&it, t))
            return 2;
        fclose(f);
    }
    return 0;
}
