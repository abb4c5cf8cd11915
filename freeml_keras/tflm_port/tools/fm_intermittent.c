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
 *          -k N             SIGKILL this process at the N-th byte written by a commit (or the
 *                           new input), after the power-on
 *          -j N             SIGKILL this process at the N-th byte written to the prepared
 *                           image's seal when this power-on prepares (a torn seal)
 *          -s STEPS         stop (exit 4) after this many atomic steps
 *          -x EXIT          stop at this exit point (fm_exit_now after it), if the model has an
 *                           exit head; -X FILE then receives that exit point's main tensor
 *          -T               stop when an exit's confidence reaches its metadata threshold
 *          -e PJ            energy reading the platform reports (constant, an integer number of
 *                           pJ); with -m PJ_PER_MAC the runtime stops at an exit when the work to
 *                           the next one costs more
 *          -c PJ_PER_CYCLE  price that work by the metadata's per-operator costs instead (v2
 *                           metadata with a complete cost table; otherwise -m applies)
 *          -O               declare the NVM writes in address order (fm_nvm.in_order: one write
 *                           per commit; this harness's byte loop is in order)
 *          -t STATS         keep counters (u64 units run, commits completed, NVM bytes written,
 *                           phase, warm restarts, power-ons) in this memory-mapped file, current
 *                           at every NVM write and phase change, so the parent can read what a
 *                           killed run did and where it was killed: phase 0 harness set-up
 *                           (not the device's), 1 restart (fm_power_on: warm check or cold
 *                           preparation and its seal), 2 inference work (kernels, planning, exit
 *                           head), 3 inside a checkpoint commit, 4 after the inference, 5 while
 *                           a new input is written and its inference started; then u64 1 once this
 *                           process committed the start of the new input's inference
 *          -K NSEC          SIGKILL this process NSEC nanoseconds (a high-resolution timer) after
 *                           the restart begins (the device's power-on): a failure anywhere
 *          -W COST -R COST -C COST   on-period in the metadata cost table's unit: each power-on
 *                           pays the restart (-R) and every atomic step its planned cost plus a
 *                           commit (-C); a step the rest of the on-period cannot pay for runs
 *                           and the power fails inside its commit (SIGKILL at its first byte)
 *          -S COST          step cost budget (cost mode, default FM_DEFAULT_STEP_COST when the
 *                           metadata has a complete cost table; 0: work / units mode)
 *          -V               verify the prepared image's sum at power-on
 * The NVM file holds the checkpoint slots, the arena, the prepared image (fm_persist.h) and the
 * state blocks, mapped at a fixed address, and the model is mapped at a fixed address too (as
 * on a device, where they are linked in place), so that a power-on finds the image it sealed.
 * Exit codes: 0 done, 2 usage/IO error, 3 nothing to resume, 4 stopped, 5 runtime error.
 * Prints one line: units=<run by this process> commits=<n> ckpt_bytes=<bytes written>
 * exit=<exit index answered, the number of exits for the model's own output> warm=<0|1>
 * work_ns=<nanoseconds from the power-on to the end>.
 * The output file receives the model's output, or the exit's int8 logits when it stopped early.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "freeml/fm.h"
#include "freeml/fm_checkpoint.h"
#include "freeml/fm_persist.h"

#define STATE_BYTES (1u << 20)
/* Fixed addresses of the NVM region, the model and the volatile head arena (inside x86-64's
 * user space and outside AddressSanitizer's shadow): what the device's linker gives. */
#define NVM_ADDR ((void *)0x2a0000000000ull)
#define MODEL_ADDR ((void *)0x2b0000000000ull)
#define RAM_ADDR ((void *)0x2c0000000000ull)
#define HEAD_ARENA_BYTES (1u << 16)
#define ALIGN16(n) (((n) + 15u) & ~(uint32_t)15u)

enum { PH_SETUP = 0, PH_RESTART = 1, PH_WORK = 2, PH_COMMIT = 3, PH_DONE = 4, PH_INPUT = 5 };

static unsigned long g_kill_at = 0; /* 0: never */
static unsigned long g_written = 0;
static unsigned long g_kill_seal_at = 0, g_seal_written = 0;
/* units run, commits, checkpoint bytes, phase, warm restarts, power-ons, started */
static volatile uint64_t *g_stats = NULL;
static volatile uint64_t g_local_stats[8];
static uint32_t g_energy = 0u;
/* on-period budget mode */
static long long g_budget = -1, g_commit_cost = 0;

/* Under AddressSanitizer: the harness exits right after its run, what it allocated is not a leak. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static void set_phase(uint64_t ph)
{
    g_stats[3] = ph;
}

static uint32_t energy_reading(void *ctx)
{
    (void)ctx;
    return g_energy;
}

/* Byte by byte, so that a kill can tear a record anywhere. */
static void nvm_write(fm_nvm *nvm, uint32_t offset, const uint8_t *src, uint32_t n)
{
    uint32_t i;
    const uint64_t was = g_stats[3];
    /* The step being committed has run: count its units before a kill can tear the commit. */
    if (nvm->ctx) {
        g_stats[0] = ((const fm_intermittent *)nvm->ctx)->units_run;
        g_stats[1] = ((const fm_intermittent *)nvm->ctx)->commits;
    }
    if (was == PH_WORK) set_phase(PH_COMMIT);   /* the seal's writes stay in the restart */
    for (i = 0; i < n; i++) {
        if (was == PH_RESTART) {                /* the prepared image's seal */
            g_seal_written++;
            if (g_kill_seal_at != 0 && g_seal_written == g_kill_seal_at) kill(getpid(), SIGKILL);
        } else {
            g_written++;
            if (g_kill_at != 0 && g_written == g_kill_at) kill(getpid(), SIGKILL);
        }
        nvm->mem[offset + i] = src[i];
    }
    g_stats[2] += n;
    set_phase(was);
}

/* Map a file (or anonymous memory for path NULL) at a fixed address. */
static void *map_at(void *addr, size_t len, int fd, int prot, int flags)
{
    void *m = mmap(addr, len, prot, flags | MAP_FIXED_NOREPLACE, fd, 0);
    if (m == MAP_FAILED || m != addr) return NULL;
    return m;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec;
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
    int16_t stop_at = -1, answer = 0;
    int8_t logits[FM_CKPT_MAX_CLASSES];
    uint8_t thresholds = 0, has_energy = 0, verify = 0, warm = 0;
    uint32_t per_mac = 0u, per_cycle = 0u;
    uint32_t model_len, max_steps = 0, input_len = 0;
    unsigned long long kill_ns = 0;
    uint8_t gran_set = 0, work_set = 0, in_order = 0;
    uint8_t *model, *input = NULL, *scratch, *nvm_mem, *ram, done = 0;
    long long restart_cost = 0, t0;
    fm_step_config cfg;
    fm_blocks blocks;
    fm_prepared *image;
    static fm_interp probe;
    fm_nvm nvm;
    fm_intermittent r;
    fm_status s;
    int argi, fd, creating;
    int16_t out_t;
    uint32_t arena, state_need, head_state_need = 0, ckpt, off_arena, off_image, off_state, off_head, nvm_len;
    uint16_t head_sg;

    g_stats = g_local_stats;
    cfg.granularity = FM_GRANULARITY_ANY;
    cfg.step_work = FM_DEFAULT_STEP_WORK;
    cfg.step_cost = FM_DEFAULT_STEP_COST;
    if (argc < 4) {
        fprintf(stderr, "usage: fm_intermittent MODEL NVM new INPUT|resume|plan [options]\n");
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
        if (!strcmp(argv[argi], "-T") || !strcmp(argv[argi], "-O") || !strcmp(argv[argi], "-V")) {
            if (argv[argi][1] == 'T') thresholds = 1;
            else if (argv[argi][1] == 'O') in_order = 1;
            else verify = 1;
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
            g_energy = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
            has_energy = 1;
        } else if (!strcmp(argv[argi], "-m")) per_mac = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-c")) per_cycle = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-g")) {
            cfg.granularity = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
            gran_set = 1;
        } else if (!strcmp(argv[argi], "-w")) {
            cfg.step_work = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
            work_set = 1;
        } else if (!strcmp(argv[argi], "-S")) cfg.step_cost = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-o")) output_path = argv[argi + 1];
        else if (!strcmp(argv[argi], "-k")) g_kill_at = strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-j")) g_kill_seal_at = strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-K")) kill_ns = strtoull(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-W")) g_budget = atoll(argv[argi + 1]);
        else if (!strcmp(argv[argi], "-R")) restart_cost = atoll(argv[argi + 1]);
        else if (!strcmp(argv[argi], "-C")) g_commit_cost = atoll(argv[argi + 1]);
        else if (!strcmp(argv[argi], "-s")) max_steps = (uint32_t)strtoul(argv[argi + 1], NULL, 10);
        else if (!strcmp(argv[argi], "-t")) {
            int sfd = open(argv[argi + 1], O_RDWR | O_CREAT, 0644);
            if (sfd < 0 || ftruncate(sfd, 64) != 0) return 2;
            g_stats = (volatile uint64_t *)mmap(NULL, 64, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
            if ((void *)g_stats == MAP_FAILED) return 2;
            memset((void *)g_stats, 0, 64);
        }
        else {
            fprintf(stderr, "unknown option %s\n", argv[argi]);
            return 2;
        }
    }
    /* units mode when only a granularity is given (the runtime's older default) */
    if (gran_set && !work_set) cfg.step_work = 0u;
    if (gran_set && !work_set) cfg.step_cost = 0u;
    if (work_set) cfg.step_cost = 0u;
    set_phase(PH_SETUP);
    /* The model, mapped at a fixed address (a device links it in place). */
    fd = open(model_path, O_RDONLY);
    if (fd < 0) {
        fprintf(stderr, "cannot read %s\n", model_path);
        return 2;
    }
    {
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_size <= 0) return 2;
        model_len = (uint32_t)st.st_size;
    }
    model = (uint8_t *)map_at(MODEL_ADDR, model_len, fd, PROT_READ, MAP_PRIVATE);
    if (!model) model = read_file(model_path, &model_len);   /* then every power-on is cold */
    close(fd);
    if (!model) {
        fprintf(stderr, "cannot read %s\n", model_path);
        return 2;
    }
    /* Sizes of the blocks (a host-side first pass; a device build knows them from its link). */
    scratch = (uint8_t *)malloc(STATE_BYTES);
    s = fm_init(&probe, model, model_len, scratch, STATE_BYTES, NULL, 0);
    if (s != FM_OK && s != FM_ERR_MEMORY) {
        const fm_error *e = fm_last_error(&probe);
        fprintf(stderr, "model refused: %s (operator %ld, tensor %ld, value %ld)\n", e->msg ? e->msg : "?",
                (long)e->op, (long)e->tensor, (long)e->value);
        return 5;
    }
    arena = fm_arena_needed(&probe);
    state_need = fm_state_needed(&probe);
    if (fm_exit_find(model, model_len, &head_sg) == FM_ERR_FORMAT) {
        fprintf(stderr, "freeml metadata malformed: its record tables do not fit the buffer\n");
        return 5;
    }
    if (fm_exit_find(model, model_len, &head_sg) == FM_OK) {
        s = fm_init_subgraph(&probe, model, model_len, head_sg, scratch, STATE_BYTES, NULL, 0);
        if (s != FM_OK && s != FM_ERR_MEMORY) {
            fprintf(stderr, "exit head refused: %s\n", fm_last_error(&probe)->msg ? fm_last_error(&probe)->msg : "?");
            return 5;
        }
        head_state_need = fm_state_needed(&probe);
    }
    free(scratch);
    ckpt = ALIGN16(fm_ckpt_bytes(FM_CKPT_MAX_CLASSES));
    off_arena = ckpt;
    off_image = off_arena + ALIGN16(arena);
    off_state = off_image + ALIGN16((uint32_t)sizeof(fm_prepared));
    off_head = off_state + ALIGN16(state_need);
    nvm_len = off_head + ALIGN16(head_state_need) + 16u;
    fd = open(nvm_path, O_RDWR | O_CREAT, 0644);
    if (fd < 0 || ftruncate(fd, (off_t)nvm_len) != 0) {
        fprintf(stderr, "cannot open %s\n", nvm_path);
        return 2;
    }
    nvm_mem = (uint8_t *)map_at(NVM_ADDR, nvm_len, fd, PROT_READ | PROT_WRITE, MAP_SHARED);
    if (!nvm_mem) nvm_mem = (uint8_t *)mmap(NULL, nvm_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ram = (uint8_t *)map_at(RAM_ADDR, HEAD_ARENA_BYTES, -1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if (!ram) ram = (uint8_t *)malloc(HEAD_ARENA_BYTES);
    if (nvm_mem == MAP_FAILED || !ram) return 2;
    nvm.mem = nvm_mem;
    nvm.len = nvm_len;
    nvm.write = nvm_write;
    nvm.ctx = NULL;
    nvm.in_order = in_order;
    blocks.model = model;
    blocks.model_len = model_len;
    blocks.arena = nvm_mem + off_arena;
    blocks.arena_len = ALIGN16(arena);
    blocks.state = nvm_mem + off_state;
    blocks.state_len = ALIGN16(state_need);
    blocks.head_state = head_state_need ? nvm_mem + off_head : NULL;
    blocks.head_state_len = ALIGN16(head_state_need);
    blocks.head_arena = ram;
    blocks.head_arena_len = HEAD_ARENA_BYTES;
    image = (fm_prepared *)(void *)(nvm_mem + off_image);

    /* ---- power-on: what a device does from reset ---- */
    if (kill_ns) {
        /* a high-resolution timer (CLOCK_MONOTONIC, no timer slack): the failure lands within
         * microseconds of the drawn time, inside whatever the process is doing */
        timer_t tid;
        struct sigevent ev;
        struct itimerspec its;
        memset(&ev, 0, sizeof ev);
        memset(&its, 0, sizeof its);
        ev.sigev_notify = SIGEV_SIGNAL;
        ev.sigev_signo = SIGKILL;
        its.it_value.tv_sec = (time_t)(kill_ns / 1000000000ull);
        its.it_value.tv_nsec = (long)(kill_ns % 1000000000ull);
        prctl(PR_SET_TIMERSLACK, 1ul, 0ul, 0ul, 0ul);
        if (timer_create(CLOCK_MONOTONIC, &ev, &tid) != 0 || timer_settime(tid, 0, &its, NULL) != 0) return 2;
    }
    t0 = now_ns();
    g_stats[5] += 1u;
    set_phase(PH_RESTART);
    s = fm_power_on(image, &nvm, &blocks, &cfg, 0u, verify, &r, &warm);
    if (s != FM_OK) {
        fprintf(stderr, "power-on failed: %s\n",
                fm_last_error(&image->main)->msg ? fm_last_error(&image->main)->msg : "(no message)");
        return 5;
    }
    g_stats[4] += warm;
    nvm.ctx = &r;
    if (r.exits) {
        r.stop_at_exit = stop_at;
        r.use_thresholds = thresholds;
        if (has_energy) {
            r.energy = energy_reading;
            r.energy_per_mac = per_mac;
            r.energy_per_cycle = per_cycle;
        }
    }
    set_phase(PH_WORK);
    if (!strcmp(mode, "plan")) {
        uint16_t i, big_op;
        uint32_t big = fm_largest_step_units(r.it, cfg.granularity, &big_op), k, n;
        fm_step_info *steps, largest;
        n = fm_plan_steps(&r, NULL, 0u, &largest);
        steps = (fm_step_info *)malloc((n ? n : 1u) * sizeof *steps);
        if (!steps || fm_plan_steps(&r, steps, n, &largest) != n) return 2;
        for (i = 0; i < fm_num_ops(r.it); i++) {
            printf("op=%u code=%d units=%u step_units=%u unit_cost=%u\n", (unsigned)i, (int)fm_op_code(r.it, i),
                   (unsigned)fm_op_units(r.it, i), (unsigned)fm_op_step_units(r.it, i),
                   (unsigned)fm_op_unit_cost(r.it, i));
        }
        for (k = 0; k < n; k++) {
            printf("step=%u op=%u unit=%u units=%u work=%u cost=%u\n", (unsigned)k, (unsigned)steps[k].op,
                   (unsigned)steps[k].unit, (unsigned)steps[k].units, (unsigned)steps[k].work,
                   (unsigned)steps[k].cost);
        }
        if (r.step_work > 0u || r.step_cost > 0u) {   /* the largest step of this configuration */
            big = largest.units;
            big_op = largest.op;
        }
        printf("largest_step=%u op=%u record_bytes=%u largest_step_work=%u largest_step_op=%u steps=%u "
               "largest_step_cost=%u mode=%s\n",
               (unsigned)big, (unsigned)big_op, (unsigned)(FM_CKPT_HEADER_BYTES + 4u * r.st.num_classes),
               (unsigned)largest.work, (unsigned)largest.op, (unsigned)n, (unsigned)largest.cost,
               largest.cost ? "cost" : r.step_work ? "work" : "units");
        return 0;
    }
    if (creating) {
        int16_t in_t = fm_input(r.it, 0);
        input = read_file(input_path, &input_len);
        if (!input || input_len != fm_tensor_bytes(r.it, in_t)) {
            fprintf(stderr, "input must be %u bytes\n", (unsigned)fm_tensor_bytes(r.it, in_t));
            return 2;
        }
        set_phase(PH_INPUT);
        s = fm_prepare_input(&r);
        if (s) return 5;
        nvm_write(&nvm, (uint32_t)(fm_tensor_data(r.it, in_t) - nvm.mem), input, input_len);
        s = fm_start(&r);
        if (s) return 5;
        g_stats[6] = 1u;              /* this input's inference is committed as started */
        set_phase(PH_WORK);
    }
    if (g_budget >= 0) {
        /* On-period budget: pay the restart, then step by step while the budget lasts. */
        long long left = g_budget - restart_cost;
        uint32_t taken = 0;
        uint8_t found = 0;
        s = FM_OK;
        if (!r.st_committed) {            /* where the committed inference is */
            s = fm_ckpt_load(r.nvm, r.ckpt_offset, r.st.num_classes, &r.st, &found);
            r.st_committed = found;
            if (s == FM_OK && !found) s = FM_ERR_STATE;
        }
        while (s == FM_OK && !done && (max_steps == 0u || taken < max_steps)) {
            fm_step_info next, largest;
            fm_cursor at;
            long long cost;
            (void)largest;
            if (!r.st_committed) break;
            at.op = r.st.op;
            at.unit = r.st.unit;
            {
                /* the cost of the step that starts at the committed position */
                fm_intermittent q = r;
                uint32_t i, n = fm_plan_steps(&q, NULL, 0u, &largest);
                fm_step_info *all = (fm_step_info *)malloc((n ? n : 1u) * sizeof *all);
                memset(&next, 0, sizeof next);
                if (all && fm_plan_steps(&q, all, n, &largest) == n) {
                    for (i = 0; i < n; i++) {
                        if (all[i].op > at.op || (all[i].op == at.op && all[i].unit >= at.unit)) {
                            next = all[i];
                            break;
                        }
                    }
                }
                free(all);
            }
            cost = (long long)next.cost + g_commit_cost;
            if (cost > left) g_kill_at = g_written + 1u;   /* runs, then fails inside its commit */
            s = fm_resume(&r, 1u, &done);
            if (s) break;
            left -= cost;
            taken++;
        }
    } else {
        s = fm_resume(&r, max_steps, &done);
    }
    g_stats[0] = r.units_run;
    g_stats[1] = r.commits;
    set_phase(PH_DONE);
    if (s == FM_OK && done) s = fm_answer(&r, &answer, logits);
    printf("units=%u commits=%u ckpt_bytes=%lu exit=%d warm=%u work_ns=%lld\n", (unsigned)r.units_run,
           (unsigned)r.commits, (unsigned long)r.commits * (FM_CKPT_HEADER_BYTES + 4u * r.st.num_classes),
           (int)answer, (unsigned)warm, now_ns() - t0);
    if (s == FM_ERR_STATE) return 3;
    if (s) {
        fprintf(stderr, "runtime error: %s\n", fm_last_error(r.it)->msg ? fm_last_error(r.it)->msg : "(no message)");
        return 5;
    }
    if (!done) return 4;
    out_t = fm_output(r.it, 0);
    if (output_path) {
        FILE *f = fopen(output_path, "wb");
        const uint8_t *data = (const uint8_t *)fm_tensor_data(r.it, out_t);
        uint32_t bytes = fm_tensor_bytes(r.it, out_t);
        if (r.exits && answer < (int16_t)r.exits->num_exits) {
            data = (const uint8_t *)logits;
            bytes = r.exits->num_classes;
        }
        if (!f || fwrite(data, 1, bytes, f) != bytes) return 2;
        fclose(f);
    }
    if (dump_path && r.exits && answer < (int16_t)r.exits->num_exits) {
        FILE *f = fopen(dump_path, "wb");
        int16_t t = r.exits->main_tensor[answer];
        if (!f || fwrite(fm_tensor_data(r.it, t), 1, fm_tensor_bytes(r.it, t), f) != fm_tensor_bytes(r.it, t))
            return 2;
        fclose(f);
    }
    return 0;
}
