/* The paper's UN update, fused per filter row: riemann_dnn.step.native's CPU kernel.
 *
 * For each row w (length n) of each 2-D (rows, n) weight, with gradient g, rate lr:
 *
 *   g <- (maximize ? -g : g) + wd * w;   c = <w, g>;   r = g - c w
 *   momentum 0:  w' = normalize((1 + lr c) w - lr g)
 *   momentum mu: m <- (first step) r, else mu m + (1 - tau) r;  d = nesterov ? r + mu m : m;
 *                w' = normalize(w - lr d);  m <- m - <w', m> w'
 *
 * Each row is read from memory once; the later passes run while it is in cache. Sums are
 * accumulated in double (so <g, g> of finite float32 data never overflows: a row is finite
 * iff its <g, g> is). Before normalising, the update is scaled by 1 / max(1, |coefficients|)
 * so that a huge rate cannot overflow; the norm is taken in double. A row whose gradient
 * (or point, or resulting update) is not finite is left untouched -- w and m keep their
 * values; a fresh momentum row (first step) is zero -- and counted. Per-row arithmetic does
 * not depend on the thread count or on how rows are split among threads.
 *
 * dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16. Half rows are converted to float32
 * per row, stepped in float32 (momentum buffer float32) and rounded back.
 *
 * Built at first use by riemann_dnn/step/native/build.py; no Python or torch headers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define RDNN_API __attribute__((visibility("default")))

typedef struct {
    double momentum, dampening, weight_decay, sign; /* sign: -1 when maximizing */
    int nesterov, first;
} params_t;

/* Sums use 32-byte vectors of T (GCC/Clang vector extensions, lowered to what the CPU
   has) with several accumulators, enough independent chains to hide the FMA latency; the
   summation order is fixed by n alone, so results depend on nothing but the row. */
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

/* The three sums <w, g>, <w, w>, <g, g> in double, from any precision (the slow path for
   float rows whose float sums overflow). */
#define DEFINE_SUMS_DOUBLE(NAME, T)                                                        \
    static void NAME(const T *w, const T *g, int64_t n, double *out) {                     \
        double c = 0, q = 0, s = 0;                                                        \
        for (int64_t i = 0; i < n; i++) {                                                  \
            c += (double)w[i] * g[i];                                                      \
            q += (double)w[i] * w[i];                                                      \
            s += (double)g[i] * g[i];                                                      \
        }                                                                                  \
        out[0] = c, out[1] = q, out[2] = s;                                                \
    }
DEFINE_SUMS_DOUBLE(sums_double_f32, float)

/* one row in T precision (float or double, V its vector); returns 1 when stepped, 0 when
   left untouched. mbuf, vbuf: scratch rows of length n. */
#define DEFINE_ROW(NAME, T, V)                                                             \
    static int NAME(T *restrict w, const T *restrict g, T *restrict m, int64_t n,          \
                    const params_t *p, double lr, T *restrict mbuf, T *restrict vbuf) {    \
        enum { K = sizeof(V) / sizeof(T), U = 4 };                                         \
        const double sg = p->sign, wd = p->weight_decay;                                   \
        V cs[U], qs[U], gs[U];                                                             \
        for (int u = 0; u < U; u++) cs[u] = qs[u] = gs[u] = (V){0};                        \
        int64_t i = 0;                                                                     \
        for (; i + U * K <= n; i += U * K)                                                 \
            for (int u = 0; u < U; u++) {                                                  \
                V wv = VLOAD(V, w + i + u * K), gv = VLOAD(V, g + i + u * K);              \
                cs[u] += wv * gv;                                                          \
                qs[u] += wv * wv;                                                          \
                gs[u] += gv * gv;                                                          \
            }                                                                              \
        for (; i + K <= n; i += K) {                                                       \
            V wv = VLOAD(V, w + i), gv = VLOAD(V, g + i);                                  \
            cs[0] += wv * gv;                                                              \
            qs[0] += wv * wv;                                                              \
            gs[0] += gv * gv;                                                              \
        }                                                                                  \
        double c0 = 0, ww = 0, g0 = 0;                                                     \
        for (; i < n; i++) {                                                               \
            c0 += (double)w[i] * g[i];                                                     \
            ww += (double)w[i] * w[i];                                                     \
            g0 += (double)g[i] * g[i];                                                     \
        }                                                                                  \
        c0 += HSUM(K, (cs[0] + cs[1]) + (cs[2] + cs[3]));                                  \
        ww += HSUM(K, (qs[0] + qs[1]) + (qs[2] + qs[3]));                                  \
        g0 += HSUM(K, (gs[0] + gs[1]) + (gs[2] + gs[3]));                                  \
        if (!isfinite(c0 + ww + g0)) {                                                     \
            if (sizeof(T) == 8) return 0;                                                  \
            double sums[3];                                                                \
            sums_double_f32((const float *)w, (const float *)g, n, sums);                  \
            c0 = sums[0], ww = sums[1], g0 = sums[2];                                      \
            if (!isfinite(c0 + ww + g0)) return 0;                                         \
        }                                                                                  \
        /* the gradient g' = sg g + wd w: c = <w, g'>, gg = <g', g'> */                    \
        const double c = sg * c0 + wd * ww, gg = g0 + 2 * sg * wd * c0 + wd * wd * ww;     \
        const T sgT = (T)sg, wdT = (T)wd;                                                  \
        if (p->momentum == 0) {                                                            \
            /* x = a w - b g', scaled so that neither coefficient exceeds 1 */              \
            double a = 1 + lr * c, b = lr;                                                 \
            double s = fmax(1.0, fmax(fabs(a), fabs(b)));                                  \
            a /= s;                                                                        \
            b /= s;                                                                        \
            double big = a * a * ww + b * b * gg;                                          \
            double nn = big - 2 * a * b * c;                                               \
            /* where a w and b g' nearly cancel, rounding the written row in T would move \
               its norm off 1 by eps_T sqrt(big / nn): form the row in T, sum its squares */ \
            if (!(nn > (sizeof(T) == 4 ? 0x1p-6 : 0x1p-20) * big)) {                       \
                const T aT = (T)a, bT = (T)b;                                              \
                double ns = 0;                                                             \
                for (int64_t k = 0; k < n; k++) {                                          \
                    vbuf[k] = aT * w[k] - bT * (sgT * g[k] + wdT * w[k]);                  \
                    ns += (double)vbuf[k] * vbuf[k];                                       \
                }                                                                          \
                if (!(ns > 0) || !isfinite(ns)) return 0;                                  \
                const T invT = (T)(1 / sqrt(ns));                                          \
                _Pragma("omp simd") for (int64_t k = 0; k < n; k++) w[k] = vbuf[k] * invT; \
                return 1;                                                                  \
            }                                                                              \
            if (!(nn > 0) || !isfinite(nn)) return 0;                                      \
            const double inv = 1 / sqrt(nn);                                               \
            const T A = (T)(a * inv), B = (T)(b * inv);                                    \
            _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                          \
                T gk = sgT * g[k] + wdT * w[k];                                            \
                w[k] = A * w[k] - B * gk;                                                  \
            }                                                                              \
            return 1;                                                                      \
        }                                                                                  \
        /* v = (w - lr d) / max(1, lr); w' = v / |v|; m' = m - <w', m> w' */               \
        const T cT = (T)c, mu = (T)p->momentum, keep = (T)(1 - p->dampening);              \
        const double s = fmax(1.0, lr);                                                    \
        const T ws = (T)(1 / s), ls = (T)(lr / s);                                         \
        const int first = p->first, nesterov = p->nesterov;                                \
        V vs[2] = {(V){0}, (V){0}}, ms[2] = {(V){0}, (V){0}};                              \
        i = 0;                                                                             \
        for (; i + K <= n; i += K) {                                                       \
            V wv = VLOAD(V, w + i), gv = VLOAD(V, g + i);                                  \
            V gi = sgT * gv + wdT * wv;                                                    \
            V ri = gi - cT * wv, mi = ri;                                                  \
            if (!first) mi = mu * VLOAD(V, m + i) + keep * ri;                             \
            V di = nesterov ? ri + mu * mi : mi;                                           \
            V vi = ws * wv - ls * di;                                                      \
            VSTORE(mbuf + i, mi);                                                          \
            VSTORE(vbuf + i, vi);                                                          \
            const int u = (int)((i / K) & 1);                                              \
            vs[u] += vi * vi;                                                              \
            ms[u] += vi * mi;                                                              \
        }                                                                                  \
        double vv = 0, vm = 0;                                                             \
        for (; i < n; i++) {                                                               \
            T gi = sgT * g[i] + wdT * w[i];                                                \
            T ri = gi - cT * w[i];                                                         \
            T mi = first ? ri : mu * m[i] + keep * ri;                                     \
            T di = nesterov ? ri + mu * mi : mi;                                           \
            T vi = ws * w[i] - ls * di;                                                    \
            mbuf[i] = mi;                                                                  \
            vbuf[i] = vi;                                                                  \
            vv += (double)vi * vi;                                                         \
            vm += (double)vi * mi;                                                         \
        }                                                                                  \
        vv += HSUM(K, vs[0] + vs[1]);                                                      \
        vm += HSUM(K, ms[0] + ms[1]);                                                      \
        if (!isfinite(vv + vm)) { /* float overflow: redo in double */                     \
            vv = vm = 0;                                                                   \
            for (int64_t k = 0; k < n; k++) {                                              \
                vv += (double)vbuf[k] * vbuf[k];                                           \
                vm += (double)vbuf[k] * mbuf[k];                                           \
            }                                                                              \
        }                                                                                  \
        if (!(vv > 0) || !isfinite(vv + vm)) return 0;                                     \
        const double inv = 1 / sqrt(vv);                                                   \
        const T invT = (T)inv, xmT = (T)(vm * inv);                                        \
        _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                              \
            T xk = vbuf[k] * invT;                                                         \
            w[k] = xk;                                                                     \
            m[k] = mbuf[k] - xmT * xk;                                                     \
        }                                                                                  \
        return 1;                                                                          \
    }

DEFINE_ROW(row_f32, float, vf32)
DEFINE_ROW(row_f64, double, vf64)

/* A plain (Euclidean) row: torch.optim.SGD's update of w, in its order of roundings (ATen's
   add with alpha is a fused multiply-add: a + alpha b = fma(alpha, b, a)), written only
   when the new w and m are finite (else the row is left untouched and 0 returned):
     g' = sign g + wd w;  m <- (first) g', else mu m + (1 - tau) g';  d = nesterov ? g' + mu m : m
     (d = g' without momentum);  w <- w - lr d.
   mbuf, vbuf: scratch rows of length n. */
#define DEFINE_PLAIN(NAME, T, FMA)                                                         \
    static inline __attribute__((always_inline)) int NAME##_body(                          \
        T *restrict w, const T *restrict g, T *restrict m, int64_t n, const params_t *p,   \
        double lr, T *restrict mbuf, T *restrict vbuf, const int has_wd, const int has_m,  \
        const int first, const int nesterov) {                                             \
        const T sgT = (T)p->sign, wdT = (T)p->weight_decay, mu = (T)p->momentum;           \
        const T keep = (T)(1 - p->dampening), nlr = (T)(-lr);                              \
        T bad = 0;                                                                         \
        _Pragma("omp simd reduction(+ : bad)") for (int64_t k = 0; k < n; k++) {           \
            T gk = sgT * g[k];                                                             \
            if (has_wd) gk = FMA(wdT, w[k], gk);                                           \
            if (has_m) {                                                                   \
                T mk = gk;                                                                 \
                if (!first) {                                                              \
                    T held = mu * m[k];                                                    \
                    mk = FMA(keep, gk, held);                                              \
                }                                                                          \
                mbuf[k] = mk;                                                              \
                bad += mk - mk; /* NaN iff mk is not finite */                             \
                gk = nesterov ? FMA(mu, mk, gk) : mk;                                      \
            }                                                                              \
            T wk = FMA(nlr, gk, w[k]);                                                     \
            vbuf[k] = wk;                                                                  \
            bad += wk - wk;                                                                \
        }                                                                                  \
        if (bad != 0 || bad != bad) return 0;                                              \
        memcpy(w, vbuf, (size_t)n * sizeof(T));                                            \
        if (has_m) memcpy(m, mbuf, (size_t)n * sizeof(T));                                 \
        return 1;                                                                          \
    }                                                                                      \
    static int NAME(T *restrict w, const T *restrict g, T *restrict m, int64_t n,          \
                    const params_t *p, double lr, T *restrict mbuf, T *restrict vbuf) {    \
        const int wd = p->weight_decay != 0;                                               \
        if (p->momentum == 0)                                                              \
            return wd ? NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, 1, 0, 0, 0)             \
                      : NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, 0, 0, 0, 0);            \
        if (p->first)                                                                      \
            return p->nesterov ? NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, wd, 1, 1, 1)   \
                               : NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, wd, 1, 1, 0);  \
        if (p->nesterov)                                                                   \
            return wd ? NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, 1, 1, 0, 1)             \
                      : NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, 0, 1, 0, 1);            \
        return wd ? NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, 1, 1, 0, 0)                 \
                  : NAME##_body(w, g, m, n, p, lr, mbuf, vbuf, 0, 1, 0, 0);                \
    }

DEFINE_PLAIN(plain_f32, float, fmaf)
DEFINE_PLAIN(plain_f64, double, fma)

/* -- float16 / bfloat16 <-> float32 (round to nearest even, as torch's casts) ------------ */
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

static int row_half(void *wv, const void *gv, float *m, int64_t n, const params_t *p,
                    double lr, float *scratch, int bf16, int normalize) {
    uint16_t *w = (uint16_t *)wv;
    const uint16_t *g = (const uint16_t *)gv;
    float *wf = scratch, *gf = scratch + n, *mbuf = scratch + 2 * n, *vbuf = scratch + 3 * n;
    if (bf16) {
        for (int64_t i = 0; i < n; i++) {
            wf[i] = bf16_to_f32(w[i]);
            gf[i] = bf16_to_f32(g[i]);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            wf[i] = f16_to_f32(w[i]);
            gf[i] = f16_to_f32(g[i]);
        }
    }
    if (!(normalize ? row_f32 : plain_f32)(wf, gf, m, n, p, lr, mbuf, vbuf)) return 0;
    if (bf16)
        for (int64_t i = 0; i < n; i++) w[i] = f32_to_bf16(wf[i]);
    else
        for (int64_t i = 0; i < n; i++) w[i] = f32_to_f16(wf[i]);
    return 1;
}

static const size_t ELEMENT_SIZE[4] = {4, 8, 2, 2};
#ifndef PREFETCH
#define PREFETCH 1024
#endif

/* Step rows [r0, r1) of tensor t; returns the number of rows left untouched. */
static int64_t step_rows(int64_t t, int64_t r0, int64_t r1, const int64_t *ncols,
                         const int8_t *normalize,
                         void *const *w, const void *const *g, void *const *m, int dtype,
                         const double *const *lr, const int64_t *rows_per_lr, const params_t *p,
                         void *scratch) {
    const int64_t n = ncols[t];
    const size_t es = ELEMENT_SIZE[dtype];
    const size_t ms = dtype == 1 ? 8 : 4;
    int64_t bad = 0;
    for (int64_t r = r0; r < r1; r++) {
        char *wr = (char *)w[t] + (size_t)r * n * es;
        const char *gr = (const char *)g[t] + (size_t)r * n * es;
        char *mr = m ? (char *)m[t] + (size_t)r * n * ms : NULL;
        const double rate = lr[t][r / rows_per_lr[t]];
        if (r + 1 < r1) {
            /* the start of the next row (up to PREFETCH bytes of each array) into L2 while
               this one is computed; the hardware prefetcher streams the rest */
            const size_t wb = (size_t)n * es, mb = (size_t)n * ms;
            const size_t wend = wb < PREFETCH ? wb : PREFETCH, mend = mb < PREFETCH ? mb : PREFETCH;
            for (size_t o = 0; o < wend; o += 64) {
                __builtin_prefetch(wr + wb + o, 1, 1);
                __builtin_prefetch(gr + wb + o, 0, 1);
            }
            if (mr)
                for (size_t o = 0; o < mend; o += 64) __builtin_prefetch(mr + mb + o, 1, 1);
        }
        int ok;
        if (dtype == 0) {
            float *s = (float *)scratch;
            ok = (normalize[t] ? row_f32 : plain_f32)((float *)wr, (const float *)gr,
                                                      (float *)mr, n, p, rate, s, s + n);
        } else if (dtype == 1) {
            double *s = (double *)scratch;
            ok = (normalize[t] ? row_f64 : plain_f64)((double *)wr, (const double *)gr,
                                                      (double *)mr, n, p, rate, s, s + n);
        } else {
            ok = row_half(wr, gr, (float *)mr, n, p, rate, (float *)scratch, dtype == 3,
                          normalize[t]);
        }
        if (!ok) {
            bad++;
            if (mr && p->first) memset(mr, 0, (size_t)n * ms);
        }
    }
    return bad;
}

/* The step on `ntensors` row-major (rows[t], ncols[t]) weights w[t] with gradients g[t]
   and (momentum != 0) buffers m[t] (float64 for float64 weights, else float32).
   Row r of tensor t takes rate lr[t][r / rows_per_lr[t]] (the rates are read where the
   caller keeps them, e.g. a float64 tensor of one rate per copy). Rows are split among `nthreads`
   threads by element count. Sets *found = 1 (if found is not NULL) when some row was left
   untouched; returns the number of such rows, or -1 on bad arguments / no memory. */
RDNN_API int64_t rdnn_oblique_sgd(int64_t ntensors, const int64_t *rows, const int64_t *ncols,
                                  const int8_t *normalize,
                                  void *const *w, const void *const *g, void *const *m,
                                  int dtype, const double *const *lr, const int64_t *rows_per_lr,
                                  double momentum, double dampening, int nesterov,
                                  double weight_decay, int maximize, int first, int nthreads,
                                  float *found) {
    if (ntensors <= 0) return 0;
    if (dtype < 0 || dtype > 3 || (momentum != 0 && !m) || !lr) return -1;
    params_t p = {momentum, dampening, weight_decay, maximize ? -1.0 : 1.0, nesterov, first};
    int64_t total = 0, widest = 1;
    for (int64_t t = 0; t < ntensors; t++) {
        if (rows[t] < 0 || ncols[t] < 1 || rows_per_lr[t] < 1 || !lr[t]) return -1;
        total += rows[t] * ncols[t];
        if (ncols[t] > widest) widest = ncols[t];
    }
    /* scratch per thread: 2 rows of T, or 4 rows of float on the half path */
    const size_t scratch_bytes = (size_t)widest * 16 + 64;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (total < ((int64_t)1 << 15)) nt = 1; /* too small to pay for waking threads */
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
                    if (r0 < r1)
                        bad += step_rows(t, r0, r1, ncols, normalize, w, g, m, dtype, lr, rows_per_lr, &p,
                                         scratch);
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

/* Whether every entry of the `ntensors` arrays g[t] (numel[t] entries of dtype) is finite:
   one read-only pass (no write-back, unlike GradScaler's kernel), by blocks so that a bad
   entry ends the scan early. Returns 1 when all are finite, else 0. */
#define DEFINE_FINITE(NAME, T)                                                             \
    static int NAME(const T *restrict g, int64_t n) {                                      \
        for (int64_t b = 0; b < n; b += 4096) {                                            \
            const int64_t e = b + 4096 < n ? b + 4096 : n;                                 \
            T acc = 0;                                                                     \
            _Pragma("omp simd reduction(+ : acc)") for (int64_t k = b; k < e; k++)         \
                acc += g[k] - g[k]; /* NaN iff g[k] is not finite */                       \
            if (acc != 0 || acc != acc) return 0;                                          \
        }                                                                                  \
        return 1;                                                                          \
    }
DEFINE_FINITE(finite_f32, float)
DEFINE_FINITE(finite_f64, double)
static int finite_half(const uint16_t *restrict g, int64_t n, uint16_t exponent) {
    uint16_t any = 0;
    for (int64_t k = 0; k < n; k++) any |= (uint16_t)((g[k] & exponent) == exponent);
    return !any;
}
RDNN_API int rdnn_all_finite(int64_t ntensors, const int64_t *numel, const void *const *g,
                             int dtype) {
    for (int64_t t = 0; t < ntensors; t++) {
        int ok = dtype == 0   ? finite_f32((const float *)g[t], numel[t])
                 : dtype == 1 ? finite_f64((const double *)g[t], numel[t])
                              : finite_half((const uint16_t *)g[t], numel[t],
                                            dtype == 2 ? 0x7c00u : 0x7f80u);
        if (!ok) return 0;
    }
    return 1;
}

RDNN_API int rdnn_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
