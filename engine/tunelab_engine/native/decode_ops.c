/* The small operations of a decode step around its products, each one C call where torch takes
 * five to fifteen ops (with their allocations and dispatch) a layer: RMSNorm of a few rows, rope on
 * q and k in place, and the cached attention of one new query per row with its cache write.
 * bf16 activations; each rounds to bf16 where the torch code it stands in for rounds, so the
 * results match that code's to the last bit, or, for sums taken in another order, to fp32 rounding.
 *
 * Built with bf16_rows.c into one library (native/__init__.py) and called through ctypes by
 * kernels.py, which keeps the torch code for every case these do not take.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint16_t bf16;

/* The first n of 16 lanes (none for n <= 0). */
static inline __mmask16 tail(long n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

/* 16 bf16 (masked) widened to fp32. */
static inline __m512 load16(const bf16 *p, __mmask16 m) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

static inline __m256i pack16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }

static inline void store16(bf16 *p, __m512 v, __mmask16 m) { _mm256_mask_storeu_epi16(p, m, pack16(v)); }

/* v rounded to bf16 (nearest even, as torch rounds) and widened back. */
static inline __m512 round16(__m512 v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(pack16(v)), 16));
}

/* model.RMSNorm over rows of x (row r at x + r * x_stride) into y [rows, dim]:
 * y = bf16(w * bf16(x * rsqrt(mean(x^2) + eps))), the mean taken in fp32. */
void tl_rms_norm(const bf16 *x, long rows, long x_stride, const bf16 *w, long dim, float eps, bf16 *y) {
    for (long r = 0; r < rows; r++) {
        const bf16 *xr = x + r * x_stride;
        bf16 *yr = y + r * dim;
        __m512 acc = _mm512_setzero_ps();
        for (long k = 0; k < dim; k += 16) {
            __m512 v = load16(xr + k, tail(dim - k));
            acc = _mm512_fmadd_ps(v, v, acc);
        }
        __m512 s = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(acc) / (float)dim + eps));
        for (long k = 0; k < dim; k += 16) {
            __mmask16 m = tail(dim - k);
            __m512 n = round16(_mm512_mul_ps(load16(xr + k, m), s));
            store16(yr + k, _mm512_mul_ps(load16(w + k, m), n), m);
        }
    }
}

/* model.rope in place on `heads` heads of each of `rows` rows (row r's head h at
 * x + r * row_stride + h * d): x = bf16(bf16(x * cos) + bf16(rotate_half(x) * sin)), with
 * row r's cos and sin at cos + r * d, sin + r * d. */
static void rope(bf16 *x, long rows, long row_stride, long heads, const bf16 *cos, const bf16 *sin, long d) {
    long half = d / 2;
    for (long r = 0; r < rows; r++) {
        const bf16 *c = cos + r * d, *s = sin + r * d;
        for (long h = 0; h < heads; h++) {
            bf16 *v = x + r * row_stride + h * d;
            for (long k = 0; k < half; k += 16) {
                __mmask16 m = tail(half - k);
                __m512 lo = load16(v + k, m), hi = load16(v + half + k, m);
                __m512 new_lo = _mm512_add_ps(round16(_mm512_mul_ps(lo, load16(c + k, m))),
                                              round16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), hi), load16(s + k, m))));
                __m512 new_hi = _mm512_add_ps(round16(_mm512_mul_ps(hi, load16(c + half + k, m))),
                                              round16(_mm512_mul_ps(lo, load16(s + half + k, m))));
                store16(v + k, new_lo, m);
                store16(v + half + k, new_hi, m);
            }
        }
    }
}

/* Rope on q and k of the same rows (their own strides and head counts) in one call. */
void tl_rope_qk(bf16 *q, long q_stride, long q_heads, bf16 *k, long k_stride, long k_heads, long rows,
                const bf16 *cos, const bf16 *sin, long d) {
    rope(q, rows, q_stride, q_heads, cos, sin, d);
    rope(k, rows, k_stride, k_heads, cos, sin, d);
}

static inline float dot(const float *a, const bf16 *b, long d) {
    __m512 acc = _mm512_setzero_ps();
    for (long k = 0; k < d; k += 16) {
        __mmask16 m = tail(d - k);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), load16(b + k, m), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

/* e^x for x <= 0 to about 1 ulp: x = n ln2 + r, |r| <= ln2 / 2, e^r by its Taylor polynomial to
 * r^7, scaled by 2^n (underflowing to 0 far below, as expf does). */
static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}


/* One new token per row, rows 0..rows-1: its k and v (bf16, row r's kv head g at
 * k + r * k_stride + g * d) are written to the bf16 cache at positions[r] (row r's head g at
 * cache_k + r * cache_row + g * cache_head, one position every d values), then each of its query
 * heads (q + r * q_stride + h * d; heads / kv_heads query heads share a kv head, in transformers'
 * repeat_kv order) attends to the row's positions p <= positions[r] (and positions[r] - p < window
 * where window > 0), in fp32; out [rows, heads, d] in bf16. As kv_cache's torch path over an fp32
 * cache (k and v are bf16 products, so a bf16 cache holds them exactly, in half the bytes a step
 * reads): q widened to fp32 and scaled by d^-0.5, softmax, the weighted sum of the values, rounded
 * to bf16 once. */
int tl_decode_attention(const bf16 *q, long q_stride, const bf16 *k, long k_stride, const bf16 *v, long v_stride,
                        long rows, long heads, long kv_heads, long d, bf16 *cache_k, bf16 *cache_v,
                        long cache_row, long cache_head, const int64_t *positions, long window, bf16 *out) {
    long groups = heads / kv_heads, span = 0;
    for (long r = 0; r < rows; r++)
        if (positions[r] + 1 > span) span = positions[r] + 1;
    span = (span + 15) / 16 * 16;
    /* Each query head's scores, then its fp32 copy scaled. */
    float *scores = malloc(groups * (span + d) * sizeof(float)), *qs = scores + groups * span;
    if (!scores) return -1;
    float scale = 1.0f / sqrtf((float)d);
    for (long r = 0; r < rows; r++) {
        long pos = positions[r];
        long first = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0, n = pos + 1 - first;
        for (long g = 0; g < kv_heads; g++) {
            bf16 *keys = cache_k + r * cache_row + g * cache_head, *values = cache_v + r * cache_row + g * cache_head;
            memcpy(keys + pos * d, k + r * k_stride + g * d, d * sizeof(bf16));
            memcpy(values + pos * d, v + r * v_stride + g * d, d * sizeof(bf16));
            keys += first * d;
            values += first * d;
            for (long j = 0; j < groups; j++) {
                const bf16 *qh = q + r * q_stride + (g * groups + j) * d;
                for (long i = 0; i < d; i += 16) {
                    __mmask16 m = tail(d - i);
                    _mm512_mask_storeu_ps(qs + j * d + i, m, _mm512_mul_ps(load16(qh + i, m), _mm512_set1_ps(scale)));
                }
            }
            for (long p = 0; p < n; p++)
                for (long j = 0; j < groups; j++) scores[j * span + p] = dot(qs + j * d, keys + p * d, d);
            for (long j = 0; j < groups; j++) {
                float *sj = scores + j * span;
                __m512 most = _mm512_set1_ps(-INFINITY);
                for (long p = 0; p < n; p += 16) most = _mm512_mask_max_ps(most, tail(n - p), most, _mm512_loadu_ps(sj + p));
                __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(most)), sum = _mm512_setzero_ps();
                for (long p = 0; p < n; p += 16) {
                    __mmask16 m = tail(n - p);
                    __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sj + p), top));
                    _mm512_mask_storeu_ps(sj + p, m, e);
                    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
                }
                float inv = 1.0f / _mm512_reduce_add_ps(sum);
                for (long p = 0; p < n; p++) sj[p] *= inv;
                bf16 *o = out + (r * heads + g * groups + j) * d;
                /* Four vectors of the output at a time, each in a register across the positions. */
                for (long c = 0; c < d; c += 64) {
                    __mmask16 m0 = tail(d - c), m1 = tail(d - c - 16), m2 = tail(d - c - 32), m3 = tail(d - c - 48);
                    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                    for (long p = 0; p < n; p++) {
                        __m512 w = _mm512_set1_ps(sj[p]);
                        const bf16 *vp = values + p * d + c;
                        a0 = _mm512_fmadd_ps(w, load16(vp, m0), a0);
                        a1 = _mm512_fmadd_ps(w, load16(vp + 16, m1), a1);
                        a2 = _mm512_fmadd_ps(w, load16(vp + 32, m2), a2);
                        a3 = _mm512_fmadd_ps(w, load16(vp + 48, m3), a3);
                    }
                    store16(o + c, a0, m0);
                    store16(o + c + 16, a1, m1);
                    store16(o + c + 32, a2, m2);
                    store16(o + c + 48, a3, m3);
                }
            }
        }
    }
    free(scores);
    return 0;
}
