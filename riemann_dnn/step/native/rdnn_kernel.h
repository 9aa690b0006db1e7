/* Pieces shared by the row kernels of riemann_dnn.step.native: vector types, loads and
 * sums, and float16/bfloat16 <-> float32 conversions (round to nearest even, as torch's
 * casts). Header-only (static functions); no Python or torch headers.
 */
#ifndef RDNN_KERNEL_H
#define RDNN_KERNEL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define RDNN_API __attribute__((visibility("default")))

/* 32-byte vectors of T (GCC/Clang vector extensions, lowered to what the CPU has); sums
   use several of them as accumulators, enough independent chains to hide the FMA latency,
   in an order fixed by the row length alone. */
typedef float vf32 __attribute__((vector_size(32)));
typedef double vf64 __attribute__((vector_size(32)));
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
#define HSUM(K, x)                                                                         \
    ({                                                                                     \
        double t_ = 0;                                                                     \
        for (int k_ = 0; k_ < (K); k_++) t_ += (x)[k_];                                    \
        t_;                                                                                \
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

#endif
