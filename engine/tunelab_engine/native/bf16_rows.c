/* y = x @ W^T (+ bias) for a few rows of bf16 x against a bf16 weight, fp32 accumulation, the
 * result rounded to bf16 (round to nearest even, as torch rounds). A decode step is mostly these
 * products with one to a few rows, bound by reading W: each 32 bf16 of W are loaded once and
 * multiplied into every row with AVX512-BF16's vdpbf16ps.
 *
 * Plain C with a C ABI (no torch headers, so it compiles in about a second), loaded with ctypes
 * by tunelab_engine/kernels.py; built by `python -m tunelab_engine build-native` (tunelab setup).
 * The output features are split over `threads` threads: the caller and a small pool of its own
 * (pthreads; torch's OpenMP pool is not reachable from here), which sleep on a futex between
 * products after spinning `spin` iterations.
 */
#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_THREADS 64

typedef uint16_t bf16;

static inline __m512 dot(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

static inline bf16 round_bf16(float f) {
    return (bf16)_mm_cvtsi128_si32((__m128i)_mm_cvtneps_pbh(_mm_set_ss(f)));
}

/* Feature j of rows 0..NR-1. W's row is read once, front to back: one sequential stream is what
 * the hardware prefetcher follows best (several rows of W read side by side ran at half the
 * speed). Two accumulators a row, over alternate 32-element chunks, so the additions of one
 * chain do not wait on each other. */
static inline __attribute__((always_inline)) void one_feature(
    int NR, const bf16 *x, long x_stride, const bf16 *w, long in, const bf16 *bias, bf16 *y, long out,
    long j) {
    __m512 a0[8], a1[8];
    const bf16 *wr = w + j * in;
    for (int r = 0; r < NR; r++) a0[r] = a1[r] = _mm512_setzero_ps();
    long k = 0;
    for (; k + 64 <= in; k += 64) {
        __m512i w0 = _mm512_loadu_si512(wr + k), w1 = _mm512_loadu_si512(wr + k + 32);
        for (int r = 0; r < NR; r++) {
            a0[r] = dot(a0[r], w0, _mm512_loadu_si512(x + r * x_stride + k));
            a1[r] = dot(a1[r], w1, _mm512_loadu_si512(x + r * x_stride + k + 32));
        }
    }
    for (; k < in; k += 32) {
        __mmask32 m = in - k >= 32 ? (__mmask32)~0u : (__mmask32)((1u << (in - k)) - 1);
        __m512i w0 = _mm512_maskz_loadu_epi16(m, wr + k);
        for (int r = 0; r < NR; r++) a0[r] = dot(a0[r], w0, _mm512_maskz_loadu_epi16(m, x + r * x_stride + k));
    }
    float b = 0.0f;
    if (bias) {
        uint32_t bits = (uint32_t)bias[j] << 16;
        memcpy(&b, &bits, sizeof b);
    }
    for (int r = 0; r < NR; r++) y[r * out + j] = round_bf16(_mm512_reduce_add_ps(_mm512_add_ps(a0[r], a1[r])) + b);
}

#define FEATURES(NR) \
    for (long j = start; j < end; j++) one_feature(NR, xr, x_stride, w, in, bias, yr, out, j)

/* Features [start, end) of every row, up to 8 rows at a time (x's 8 rows stay in L1). */
static void part(const bf16 *x, long rows, long x_stride, const bf16 *w, long in, long out,
                 const bf16 *bias, bf16 *y, long start, long end) {
    for (long r0 = 0; r0 < rows; r0 += 8) {
        const bf16 *xr = x + r0 * x_stride;
        bf16 *yr = y + r0 * out;
        switch (rows - r0 < 8 ? rows - r0 : 8) {
            case 1: FEATURES(1); break;
            case 2: FEATURES(2); break;
            case 3: FEATURES(3); break;
            case 4: FEATURES(4); break;
            case 5: FEATURES(5); break;
            case 6: FEATURES(6); break;
            case 7: FEATURES(7); break;
            default: FEATURES(8); break;
        }
    }
}

/* The pool: job fields written by the caller before `generation` moves; each worker does its
 * share and counts `pending` down. */
static struct {
    const bf16 *x, *w, *bias;
    bf16 *y;
    long rows, x_stride, in, out, chunk;
} job;
static _Atomic int generation;
static _Atomic int pending;
static int workers;  /* started so far */
static long spin = 0;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;  /* one threaded product at a time */

static void futex_wait(_Atomic int *addr, int value) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic int *addr) {
    syscall(SYS_futex, (int *)addr, FUTEX_WAKE_PRIVATE, MAX_THREADS, NULL, NULL, 0);
}

static void run_share(long index) {
    long start = index * job.chunk, end = start + job.chunk;
    if (end > job.out) end = job.out;
    if (start < end) part(job.x, job.rows, job.x_stride, job.w, job.in, job.out, job.bias, job.y, start, end);
}

static _Atomic int active;  /* workers wanted in the current product */

static int first_seen[MAX_THREADS];  /* the generation when each worker was started */

static void *worker(void *arg) {
    long index = (long)arg;
    int seen = first_seen[index];
    for (;;) {
        long spun = 0;
        int now;
        while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
            if (spun++ < spin) _mm_pause();
            else futex_wait(&generation, seen);
        }
        seen = now;
        if (index <= atomic_load(&active)) {
            run_share(index);
            if (atomic_fetch_sub_explicit(&pending, 1, memory_order_acq_rel) == 1) futex_wake(&pending);
        }
    }
    return NULL;
}

/* How long idle workers spin before they sleep (0: sleep at once). */
void tl_set_spin(long iterations) { spin = iterations; }

int tl_bf16_rows_linear(const bf16 *x, long rows, long x_stride, const bf16 *w, long in, long out,
                        const bf16 *bias, bf16 *y, int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    /* Shares of whole cache lines of y (32 features), none smaller than 64 features: waking a
     * thread for less costs more than it saves. */
    long most = (out + 63) / 64;
    if (threads > most) threads = (int)most;
    if (threads <= 1) {
        part(x, rows, x_stride, w, in, out, bias, y, 0, out);
        return 0;
    }
    pthread_mutex_lock(&pool_lock);
    while (workers < threads - 1) {
        pthread_t t;
        first_seen[workers + 1] = atomic_load(&generation);
        if (pthread_create(&t, NULL, worker, (void *)(long)(workers + 1)) != 0) break;
        pthread_detach(t);
        workers++;
    }
    if (threads > workers + 1) threads = workers + 1;
    job.x = x; job.w = w; job.bias = bias; job.y = y;
    job.rows = rows; job.x_stride = x_stride; job.in = in; job.out = out;
    job.chunk = ((out + threads - 1) / threads + 31) / 32 * 32;
    atomic_store(&active, threads - 1);
    atomic_store(&pending, workers);
    /* Workers beyond `active` only count down. */
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    futex_wake(&generation);
    run_share(0);
    int left;
    long spun = 0;
    while ((left = atomic_load_explicit(&pending, memory_order_acquire)) != 0) {
        if (spun++ < 1000) _mm_pause();
        else futex_wait(&pending, left);
    }
    pthread_mutex_unlock(&pool_lock);
    return 0;
}
