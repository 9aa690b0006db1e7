/* Pieces shared by the row kernels of riemann_dnn.step.native (oblique_sgd.c,
 * oblique_adam.c): vector types, loads and sums, float16/bfloat16 <-> float32 conversions
 * (round to nearest even, as torch's casts), and the split of a call's rows among threads.
 * Header-only (static functions); no Python or torch headers. build.py hashes it with each
 * source, so a change here recompiles both kernels.
 */
#ifndef RDNN_KERNEL_H
#define RDNN_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define RDNN_API __attribute__((visibility("default")))

/* Vectors of RDNN_VECTOR_BYTES (default 32) bytes of T (GCC/Clang vector extensions,
   lowered to what the CPU has); sums use several of them as accumulators, enough
   independent chains to hide the FMA latency, in an order fixed by the row length alone. */
#ifndef RDNN_VECTOR_BYTES
#define RDNN_VECTOR_BYTES 32
#endif
typedef float vf32 __attribute__((vector_size(RDNN_VECTOR_BYTES)));
typedef double vf64 __attribute__((vector_size(RDNN_VECTOR_BYTES)));
#define VLOAD(V, p)                                                                        \
    ({                                                                                     \
        V v_;                                                                              \
        memcpy(&v_, (p), sizeof v_);                                                       \
        v_;                                                                                \
    })
#define VSTORE(p, v)                                                                       \
    do {                                                                                   \
        __typeof__(v) v_ = (v);                                                            \
        memcpy((p), &v_, sizeof v_);                                                       \
    } while (0)
/* The K lanes of a vector summed in order, in double (oblique_adam.c's rows). */
#define HSUM(K, x)                                                                         \
    ({                                                                                     \
        double t_ = 0;                                                                     \
        for (int k_ = 0; k_ < (K); k_++) t_ += (x)[k_];                                    \
        t_;                                                                                \
    })
/* The K lanes of a vector summed by a pairwise tree in T (log2 K dependent adds, not K),
   then widened to double (oblique_sgd.c's rows). */
#define HSUM_TREE(K, x)                                                                    \
    ({                                                                                     \
        __typeof__(x) v_ = (x);                                                            \
        __typeof__(v_[0]) a_[K];                                                           \
        memcpy(a_, &v_, sizeof v_);                                                        \
        for (int w_ = (K) / 2; w_ > 0; w_ /= 2)                                            \
            for (int k_ = 0; k_ < w_; k_++) a_[k_] += a_[k_ + w_];                         \
        (double)a_[0];                                                                     \
    })

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
#if defined(__FLT16_MAX__) && !defined(RDNN_SOFT_HALF)
static inline float f16_to_f32(uint16_t h) {
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}
static inline uint16_t f32_to_f16(float f) {
    _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}
#else /* portable software conversions */
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    uint32_t u = sign | (exp == 31 ? 0x7f800000u | (man << 13) : ((exp + 112) << 23) | (man << 13));
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    float a = fabsf(f);
    if (a != a) return sign | 0x7e00u;
    if (a >= 65520.0f) return sign | 0x7c00u;
    if (a < 0x1p-14f) { /* subnormal: round a * 2^24 to nearest even */
        return sign | (uint16_t)nearbyintf(a * 0x1p24f);
    }
    memcpy(&u, &a, 4);
    uint32_t r = u + 0xfffu + ((u >> 13) & 1u);
    return sign | (uint16_t)((r - (112u << 23)) >> 13);
}
#endif

/* A half row (float16, or bfloat16 with bf16) to float32 and back. */
static inline void half_to_f32(const uint16_t *h, float *f, int64_t n, int bf16) {
    if (bf16)
        for (int64_t i = 0; i < n; i++) f[i] = bf16_to_f32(h[i]);
    else
        for (int64_t i = 0; i < n; i++) f[i] = f16_to_f32(h[i]);
}
static inline void f32_to_half(const float *f, uint16_t *h, int64_t n, int bf16) {
    if (bf16)
        for (int64_t i = 0; i < n; i++) h[i] = f32_to_bf16(f[i]);
    else
        for (int64_t i = 0; i < n; i++) h[i] = f32_to_f16(f[i]);
}


/* Bytes per element of each dtype code: 0 float32, 1 float64, 2 float16, 3 bfloat16. */
static const size_t RDNN_ELEMENT_SIZE[4] = {4, 8, 2, 2};

/* A kernel's step of rows [r0, r1) of tensor t (its arguments in ctx), with a scratch of
   rdnn_split_rows's size; returns the number of rows left untouched. */
typedef int64_t (*rdnn_rows_fn)(const void *ctx, int64_t t, int64_t r0, int64_t r1,
                                void *scratch);

/* Steps the rows of `ntensors` row-major (rows[t], ncols[t]) tensors with `fn`, split among
   `nthreads` threads by element count: each thread takes the rows whose first element lies
   in its share of the concatenated elements (one thread below 2^15 elements, too few to pay
   for waking threads), with a scratch of 2 rows of double or 4 rows of float of the widest
   tensor. Sets *found = 1 (if found is not NULL) when some row was left untouched; returns
   the number of such rows, or -1 on bad shapes / no memory. */
static int64_t rdnn_split_rows(int64_t ntensors, const int64_t *rows, const int64_t *ncols,
                               int nthreads, rdnn_rows_fn fn, const void *ctx, float *found) {
    int64_t total = 0, widest = 1;
    for (int64_t t = 0; t < ntensors; t++) {
        if (rows[t] < 0 || ncols[t] < 1) return -1;
        total += rows[t] * ncols[t];
        if (ncols[t] > widest) widest = ncols[t];
    }
    const size_t scratch_bytes = (size_t)widest * 16 + 64;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (total < ((int64_t)1 << 15)) nt = 1;
    int64_t bad = 0;
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : bad, failed)
#endif
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        void *scratch = malloc(scratch_bytes);
        if (!scratch) {
            failed += 1;
        } else {
            /* rows whose first element lies in [lo, hi) of the concatenated elements */
            const int64_t lo = total / nth * tid + (total % nth) * tid / nth;
            const int64_t hi = total / nth * (tid + 1) + (total % nth) * (tid + 1) / nth;
            int64_t base = 0;
            for (int64_t t = 0; t < ntensors && base < hi; t++) {
                const int64_t n = ncols[t], size = rows[t] * n;
                if (base + size > lo) {
                    int64_t r0 = lo > base ? (lo - base + n - 1) / n : 0;
                    int64_t r1 = (hi - base + n - 1) / n;
                    if (r1 > rows[t]) r1 = rows[t];
                    if (r0 < r1) bad += fn(ctx, t, r0, r1, scratch);
                }
                base += size;
            }
            free(scratch);
        }
    }
    if (failed) return -1;
    if (bad && found) *found = 1.0f;
    return bad;
}

#endif
