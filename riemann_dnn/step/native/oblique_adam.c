/* Riemannian Adam on unit-norm rows, fused per row: riemann_dnn.step.native's CPU kernel
 * of the op riemann_dnn::oblique_adam_ (see adam_ops.py and riemann_dnn/step/adam.py).
 *
 * For each row w (length n) of each 2-D (rows, n) weight, with gradient g, first moment m
 * (n values), second moment v (one value per row; vmax too with amsgrad), rate lr:
 *
 *   s = (maximize ? -g : g) + wd w;   c = <w, s>;   r = s - c w        (Riemannian gradient)
 *   m <- b1 m + (1 - b1) r;   v <- b2 v + (1 - b2) <r, r>;   vmax <- max(vmax, v)
 *   a = lr / bias1 / (sqrt(v or vmax) / bias2s + eps)                   (per row)
 *   u = (w - a m) / max(1, a);   w' = u / |u|;   m <- m - <w', m> w'   (retract, transport)
 *
 * with bias1 = 1 - b1^t and bias2s = sqrt(1 - b2^t) per tensor. The row is read from
 * memory once; the two later passes run while it is in cache (|u| and <u, m> come from
 * sums of the second pass, unless w and a m nearly cancel). Sums are accumulated in float
 * vectors and redone in double when they overflow; per-row scalars are doubles. A row whose
 * gradient (or point, or resulting update) is not finite is left untouched -- w, m, v and
 * vmax keep their values -- and counted. Per-row arithmetic does not depend on the thread
 * count or on how rows are split among threads.
 *
 * dtype: 0 float32, 1 float64, 2 float16, 3 bfloat16. Half rows are converted to float32
 * per row and stepped in float32 (m, v, vmax float32), then rounded back.
 *
 * Built at first use by riemann_dnn/step/native/build.py (load_kernel).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "rdnn_kernel.h"

typedef struct {
    double beta1, beta2, eps, weight_decay, sign; /* sign: -1 when maximizing */
    int amsgrad;
} adam_params_t;

/* one row in T precision (float or double, V its vector); returns 1 when stepped, 0 when
   left untouched. mbuf, ubuf: scratch rows of length n. */
#define DEFINE_ADAM_ROW(NAME, T, V)                                                        \
    static int NAME(T *restrict w, const T *restrict g, T *restrict m, T *restrict v,      \
                    T *restrict vmax, int64_t n, const adam_params_t *p, double lr,        \
                    double bias1, double bias2s, T *restrict mbuf, T *restrict ubuf) {     \
        enum { K = sizeof(V) / sizeof(T), U = 4 };                                         \
        const double sg = p->sign, wd = p->weight_decay;                                   \
        /* pass 1: <w, g>, <w, w>, <g, g> */                                               \
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
        if (!isfinite(c0 + ww + g0)) { /* float overflow, or a non-finite entry */         \
            c0 = ww = g0 = 0;                                                              \
            for (int64_t k = 0; k < n; k++) {                                              \
                c0 += (double)w[k] * g[k];                                                 \
                ww += (double)w[k] * w[k];                                                 \
                g0 += (double)g[k] * g[k];                                                 \
            }                                                                              \
            if (!isfinite(c0 + ww + g0)) return 0;                                         \
        }                                                                                  \
        /* pass 2: r = s - c w with s = sg g + wd w; m' = b1 m + (1 - b1) r; <r, r>,      \
           <w, m'>, <m', m'> */                                                            \
        const double c = sg * c0 + wd * ww;                                                \
        const T sgT = (T)sg, wdT = (T)wd, cT = (T)c;                                       \
        const T b1 = (T)p->beta1, k1 = (T)(1 - p->beta1);                                  \
        V rs0 = (V){0}, rs1 = (V){0}, wms0 = (V){0}, wms1 = (V){0};                        \
        V mms0 = (V){0}, mms1 = (V){0};                                                    \
        i = 0;                                                                             \
        for (; i + 2 * K <= n; i += 2 * K) { /* two independent chains per sum */          \
            V w0 = VLOAD(V, w + i), g0v = VLOAD(V, g + i);                                 \
            V w1 = VLOAD(V, w + i + K), g1v = VLOAD(V, g + i + K);                         \
            V r0 = (sgT * g0v + wdT * w0) - cT * w0, r1 = (sgT * g1v + wdT * w1) - cT * w1;  \
            V m0 = b1 * VLOAD(V, m + i) + k1 * r0, m1 = b1 * VLOAD(V, m + i + K) + k1 * r1;  \
            VSTORE(mbuf + i, m0);                                                          \
            VSTORE(mbuf + i + K, m1);                                                      \
            rs0 += r0 * r0, rs1 += r1 * r1;                                                \
            wms0 += w0 * m0, wms1 += w1 * m1;                                              \
            mms0 += m0 * m0, mms1 += m1 * m1;                                              \
        }                                                                                  \
        for (; i + K <= n; i += K) {                                                       \
            V wv = VLOAD(V, w + i), gv = VLOAD(V, g + i);                                  \
            V ri = (sgT * gv + wdT * wv) - cT * wv;                                        \
            V mi = b1 * VLOAD(V, m + i) + k1 * ri;                                         \
            VSTORE(mbuf + i, mi);                                                          \
            rs0 += ri * ri, wms0 += wv * mi, mms0 += mi * mi;                              \
        }                                                                                  \
        double rr = 0, wm = 0, mm = 0;                                                     \
        for (; i < n; i++) {                                                               \
            T ri = (sgT * g[i] + wdT * w[i]) - cT * w[i];                                  \
            T mi = b1 * m[i] + k1 * ri;                                                    \
            mbuf[i] = mi;                                                                  \
            rr += (double)ri * ri;                                                         \
            wm += (double)w[i] * mi;                                                       \
            mm += (double)mi * mi;                                                         \
        }                                                                                  \
        rr += HSUM(K, rs0 + rs1);                                                          \
        wm += HSUM(K, wms0 + wms1);                                                        \
        mm += HSUM(K, mms0 + mms1);                                                        \
        if (!isfinite(rr + wm + mm)) { /* float overflow: redo in double */                \
            rr = wm = mm = 0;                                                              \
            for (int64_t k = 0; k < n; k++) {                                              \
                T ri = (sgT * g[k] + wdT * w[k]) - cT * w[k];                              \
                rr += (double)ri * ri;                                                     \
                wm += (double)w[k] * mbuf[k];                                              \
                mm += (double)mbuf[k] * mbuf[k];                                           \
            }                                                                              \
            if (!isfinite(rr + wm + mm)) return 0;                                         \
        }                                                                                  \
        /* the second moment and the row's step a, scaled: u = A w - B m' */               \
        const T vn = (T)(p->beta2 * (double)*v + (1 - p->beta2) * rr);                     \
        T vm = vn;                                                                         \
        if (p->amsgrad) vm = *vmax > vn ? *vmax : vn;                                      \
        const double a = lr / bias1 / (sqrt((double)vm) / bias2s + p->eps);                \
        const double s = fmax(1.0, a);                                                     \
        const double Ad = 1 / s, Bd = a / s;                                               \
        const T A = (T)Ad, B = (T)Bd;                                                      \
        /* |u|^2 and <u, m'> from the sums; where A w and B m' nearly cancel, rounding the \
           written row in T would move its norm off 1: form u in T and sum its squares */  \
        const double big = Ad * Ad * ww + Bd * Bd * mm;                                    \
        double uu = big - 2 * Ad * Bd * wm, um = Ad * wm - Bd * mm;                        \
        if (!(uu > (sizeof(T) == 4 ? 0x1p-6 : 0x1p-20) * big)) {                           \
            uu = um = 0;                                                                   \
            for (int64_t k = 0; k < n; k++) {                                              \
                ubuf[k] = A * w[k] - B * mbuf[k];                                          \
                uu += (double)ubuf[k] * ubuf[k];                                           \
                um += (double)ubuf[k] * mbuf[k];                                           \
            }                                                                              \
            if (!(uu > 0) || !isfinite(uu + um) || !isfinite((double)vm)) return 0;       \
            const T inv = (T)(1 / sqrt(uu)), t = (T)(um / uu);                             \
            _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                          \
                w[k] = ubuf[k] * inv;                                                      \
                m[k] = mbuf[k] - t * ubuf[k];                                              \
            }                                                                              \
        } else {                                                                           \
            if (!isfinite(uu + um) || !isfinite((double)vm)) return 0;                     \
            /* pass 3: w' = u / |u|, m <- m' - <w', m'> w' = m' - (<u, m'> / |u|^2) u */   \
            const T inv = (T)(1 / sqrt(uu)), t = (T)(um / uu);                             \
            _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                          \
                const T mk = mbuf[k], uk = A * w[k] - B * mk;                              \
                w[k] = uk * inv;                                                           \
                m[k] = mk - t * uk;                                                        \
            }                                                                              \
        }                                                                                  \
        *v = vn;                                                                           \
        if (p->amsgrad) *vmax = vm;                                                        \
        return 1;                                                                          \
    }

DEFINE_ADAM_ROW(adam_row_f32, float, vf32)
DEFINE_ADAM_ROW(adam_row_f64, double, vf64)

static int adam_row_half(void *wv, const void *gv, float *m, float *v, float *vmax, int64_t n,
                         const adam_params_t *p, double lr, double bias1, double bias2s,
                         float *scratch, int bf16) {
    float *wf = scratch, *gf = scratch + n, *mbuf = scratch + 2 * n, *ubuf = scratch + 3 * n;
    half_to_f32((const uint16_t *)wv, wf, n, bf16);
    half_to_f32((const uint16_t *)gv, gf, n, bf16);
    if (!adam_row_f32(wf, gf, m, v, vmax, n, p, lr, bias1, bias2s, mbuf, ubuf)) return 0;
    f32_to_half(wf, (uint16_t *)wv, n, bf16);
    return 1;
}

static const size_t ELEMENT_SIZE[4] = {4, 8, 2, 2};
#ifndef PREFETCH
#define PREFETCH 1024
#endif

/* Step rows [r0, r1) of tensor t; returns the number of rows left untouched. */
static int64_t adam_rows(int64_t t, int64_t r0, int64_t r1, const int64_t *ncols,
                         void *const *w, const void *const *g, void *const *m,
                         void *const *v, void *const *vmax, int dtype, const double *lr,
                         const int64_t *rows_per_lr, const double *bias1,
                         const double *bias2s, const adam_params_t *p, void *scratch) {
    const int64_t n = ncols[t];
    const size_t es = ELEMENT_SIZE[dtype], ss = dtype == 1 ? 8 : 4; /* state: T or float */
    int64_t bad = 0;
    for (int64_t r = r0; r < r1; r++) {
        char *wr = (char *)w[t] + (size_t)r * n * es;
        const char *gr = (const char *)g[t] + (size_t)r * n * es;
        char *mr = (char *)m[t] + (size_t)r * n * ss;
        char *vr = (char *)v[t] + (size_t)r * ss;
        char *xr = p->amsgrad ? (char *)vmax[t] + (size_t)r * ss : NULL;
        const double rate = lr[r / rows_per_lr[t]];
        if (r + 1 < r1) {
            /* the start of the next row (up to PREFETCH bytes of each array) into L2 while
               this one is computed; the hardware prefetcher streams the rest */
            const size_t wb = (size_t)n * es, mb = (size_t)n * ss;
            const size_t wend = wb < PREFETCH ? wb : PREFETCH, mend = mb < PREFETCH ? mb : PREFETCH;
            for (size_t o = 0; o < wend; o += 64) {
                __builtin_prefetch(wr + wb + o, 1, 1);
                __builtin_prefetch(gr + wb + o, 0, 1);
            }
            for (size_t o = 0; o < mend; o += 64) __builtin_prefetch(mr + mb + o, 1, 1);
        }
        int ok;
        if (dtype == 0) {
            float *s = (float *)scratch;
            ok = adam_row_f32((float *)wr, (const float *)gr, (float *)mr, (float *)vr,
                              (float *)xr, n, p, rate, bias1[t], bias2s[t], s, s + n);
        } else if (dtype == 1) {
            double *s = (double *)scratch;
            ok = adam_row_f64((double *)wr, (const double *)gr, (double *)mr, (double *)vr,
                              (double *)xr, n, p, rate, bias1[t], bias2s[t], s, s + n);
        } else {
            ok = adam_row_half(wr, gr, (float *)mr, (float *)vr, (float *)xr, n, p, rate,
                               bias1[t], bias2s[t], (float *)scratch, dtype == 3);
        }
        bad += !ok;
    }
    return bad;
}

/* The step on `ntensors` row-major (rows[t], ncols[t]) weights w[t] with gradients g[t],
   first moments m[t] (the weight's shape), second moments v[t] and, with amsgrad, vmax[t]
   (rows[t] values each); state float64 for float64 weights, else float32. Row r of
   tensor t takes rate lr[r / rows_per_lr[t]] and the bias corrections bias1[t] = 1 - b1^t,
   bias2s[t] = sqrt(1 - b2^t). Rows are split among `nthreads` threads by element count.
   Sets *found = 1 (if found is not NULL) when some row was left untouched; returns the
   number of such rows, or -1 on bad arguments / no memory. */
RDNN_API int64_t rdnn_oblique_adam(int64_t ntensors, const int64_t *rows, const int64_t *ncols,
                                   void *const *w, const void *const *g, void *const *m,
                                   void *const *v, void *const *vmax, int dtype,
                                   const double *lr, const int64_t *rows_per_lr,
                                   const double *bias1, const double *bias2s, double beta1,
                                   double beta2, double eps, double weight_decay, int amsgrad,
                                   int maximize, int nthreads, float *found) {
    if (ntensors <= 0) return 0;
    if (dtype < 0 || dtype > 3 || !m || !v || (amsgrad && !vmax)) return -1;
    adam_params_t p = {beta1, beta2, eps, weight_decay, maximize ? -1.0 : 1.0, amsgrad};
    int64_t total = 0, widest = 1;
    for (int64_t t = 0; t < ntensors; t++) {
        if (rows[t] < 0 || ncols[t] < 1 || rows_per_lr[t] < 1) return -1;
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
                        bad += adam_rows(t, r0, r1, ncols, w, g, m, v, vmax, dtype, lr,
                                         rows_per_lr, bias1, bias2s, &p, scratch);
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

RDNN_API int rdnn_adam_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
