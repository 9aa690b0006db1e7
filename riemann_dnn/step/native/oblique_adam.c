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
 * with bias1 = 1 - b1^t and bias2s = sqrt(1 - b2^t) per tensor. Two passes per row: the
 * first reads w, g and m from memory and sums their inner products, from which <r, r>, the
 * step a, |u| and <u, m> follow; the second, while the row is in cache, writes w and m
 * (where those sums cancel, the rows r, m and u are formed explicitly). Sums are
 * accumulated in float vectors and redone in double when they overflow; per-row scalars
 * are doubles. A row whose gradient (or point, or state, or resulting update) is not
 * finite is left untouched -- w, m, v and vmax keep their values -- and counted. Per-row
 * arithmetic does not depend on the thread count or on how rows are split among threads.
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

/* The row step in T precision (float or double, V its vector), three functions per type.
   Each returns 1 when the row was stepped, 0 when it was left untouched. mbuf, ubuf:
   scratch rows of length n.

   adam_row_S, the fast path, two passes: the first reads w, g, m and sums <w,g>, <w,w>,
   <g,g>, <w,m>, <m,m>, <m,g>, from which <r,r>, the row's step a, |u|^2 and <u,m'> follow
   (r = s - c w, m' = b1 m + (1 - b1) r, u = A w - B m'); the second writes w' = u / |u|
   and m <- m' - (<u,m'> / |u|^2) u element by element. Where those sums cancel (r, m' or
   u much shorter than the terms they are summed from), adam_explicit_S forms m' as a row
   and sums <r,r>, <w,m'>, <m',m'> directly, and adam_finish_S forms u as a row when it
   still nearly cancels. */
#define DEFINE_ADAM_ROW(S, T, V)                                                           \
    static int adam_finish_##S(T *restrict w, T *restrict m, T *restrict v,                \
                               T *restrict vmax, int64_t n, const adam_params_t *p,        \
                               double lr, double bias1, double bias2s,                     \
                               const T *restrict mbuf, T *restrict ubuf, double rr,        \
                               double ww, double wm, double mm) {                          \
        enum { K = sizeof(V) / sizeof(T) };                                                \
        const T vn = (T)(p->beta2 * (double)*v + (1 - p->beta2) * rr);                     \
        T vm = vn;                                                                         \
        if (p->amsgrad) vm = *vmax > vn ? *vmax : vn;                                      \
        const double a = lr / bias1 / (sqrt((double)vm) / bias2s + p->eps);                \
        const double s = fmax(1.0, a), Ad = 1 / s, Bd = a / s;                             \
        const T A = (T)Ad, B = (T)Bd;                                                      \
        const double big = Ad * Ad * ww + Bd * Bd * mm;                                    \
        double uu = big - 2 * Ad * Bd * wm, um = Ad * wm - Bd * mm;                        \
        if (!(uu > (sizeof(T) == 4 ? 0x1p-6 : 0x1p-20) * big)) {                           \
            /* A w and B m' nearly cancel: rounding the written row in T would move its    \
               norm off 1, so form u in T and sum its squares */                           \
            uu = um = 0;                                                                   \
            for (int64_t k = 0; k < n; k++) {                                              \
                ubuf[k] = A * w[k] - B * mbuf[k];                                          \
                uu += (double)ubuf[k] * ubuf[k];                                           \
                um += (double)ubuf[k] * mbuf[k];                                           \
            }                                                                              \
        } else {                                                                           \
            _Pragma("omp simd") for (int64_t k = 0; k < n; k++) ubuf[k] = A * w[k] - B * mbuf[k]; \
        }                                                                                  \
        if (!(uu > 0) || !isfinite(uu + um) || !isfinite((double)vm)) return 0;            \
        const T inv = (T)(1 / sqrt(uu)), t = (T)(um / uu);                                 \
        _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                              \
            w[k] = ubuf[k] * inv;                                                          \
            m[k] = mbuf[k] - t * ubuf[k];                                                  \
        }                                                                                  \
        *v = vn;                                                                           \
        if (p->amsgrad) *vmax = vm;                                                        \
        (void)K;                                                                           \
        return 1;                                                                          \
    }                                                                                      \
    static int adam_explicit_##S(T *restrict w, const T *restrict g, T *restrict m,        \
                                 T *restrict v, T *restrict vmax, int64_t n,               \
                                 const adam_params_t *p, double lr, double bias1,          \
                                 double bias2s, T *restrict mbuf, T *restrict ubuf,        \
                                 double c, double ww) {                                    \
        enum { K = sizeof(V) / sizeof(T) };                                                \
        const T sgT = (T)p->sign, wdT = (T)p->weight_decay, cT = (T)c;                     \
        const T b1 = (T)p->beta1, k1 = (T)(1 - p->beta1);                                  \
        V rs0 = (V){0}, rs1 = (V){0}, wms0 = (V){0}, wms1 = (V){0};                        \
        V mms0 = (V){0}, mms1 = (V){0};                                                    \
        int64_t i = 0;                                                                     \
        for (; i + 2 * K <= n; i += 2 * K) {                                               \
            V w0 = VLOAD(V, w + i), g0 = VLOAD(V, g + i);                                  \
            V w1 = VLOAD(V, w + i + K), g1 = VLOAD(V, g + i + K);                          \
            V r0 = (sgT * g0 + wdT * w0) - cT * w0, r1 = (sgT * g1 + wdT * w1) - cT * w1;  \
            V m0 = b1 * VLOAD(V, m + i) + k1 * r0;                                         \
            V m1 = b1 * VLOAD(V, m + i + K) + k1 * r1;                                     \
            VSTORE(mbuf + i, m0);                                                          \
            VSTORE(mbuf + i + K, m1);                                                      \
            rs0 += r0 * r0, rs1 += r1 * r1;                                                \
            wms0 += w0 * m0, wms1 += w1 * m1;                                              \
            mms0 += m0 * m0, mms1 += m1 * m1;                                              \
        }                                                                                  \
        double rr = 0, wm = 0, mm = 0;                                                     \
        for (; i < n; i++) {                                                               \
            T ri = (sgT * g[i] + wdT * w[i]) - cT * w[i];                                  \
            T mi = b1 * m[i] + k1 * ri;                                                    \
            mbuf[i] = mi;                                                                  \
            rr += (double)ri * ri, wm += (double)w[i] * mi, mm += (double)mi * mi;         \
        }                                                                                  \
        rr += HSUM(K, rs0 + rs1), wm += HSUM(K, wms0 + wms1), mm += HSUM(K, mms0 + mms1);  \
        if (!isfinite(rr + wm + mm)) { /* float overflow: redo in double */                \
            rr = wm = mm = 0;                                                              \
            for (int64_t k = 0; k < n; k++) {                                              \
                T ri = (sgT * g[k] + wdT * w[k]) - cT * w[k];                              \
                rr += (double)ri * ri;                                                     \
                wm += (double)w[k] * mbuf[k], mm += (double)mbuf[k] * mbuf[k];             \
            }                                                                              \
            if (!isfinite(rr + wm + mm)) return 0;                                         \
        }                                                                                  \
        return adam_finish_##S(w, m, v, vmax, n, p, lr, bias1, bias2s, mbuf, ubuf, rr, ww,  \
                               wm, mm);                                                    \
    }                                                                                      \
    static int adam_row_##S(T *restrict w, const T *restrict g, T *restrict m,             \
                            T *restrict v, T *restrict vmax, int64_t n,                    \
                            const adam_params_t *p, double lr, double bias1, double bias2s, \
                            T *restrict mbuf, T *restrict ubuf, const T *nw, const T *ng,  \
                            const T *nm) {                                                 \
        enum { K = sizeof(V) / sizeof(T) };                                                \
        const double sg = p->sign, wd = p->weight_decay, b1d = p->beta1, k1d = 1 - b1d;    \
        /* pass 1: <w, g>, <w, w>, <g, g>, <w, m>, <m, m>, <m, g>, two chains each */      \
        V cs0 = (V){0}, cs1 = (V){0}, qs0 = (V){0}, qs1 = (V){0}, gs0 = (V){0};            \
        V gs1 = (V){0}, as0 = (V){0}, as1 = (V){0}, bs0 = (V){0}, bs1 = (V){0};            \
        V ds0 = (V){0}, ds1 = (V){0};                                                      \
        int64_t i = 0;                                                                     \
        for (; i + 2 * K <= n; i += 2 * K) {                                               \
            V w0 = VLOAD(V, w + i), g0 = VLOAD(V, g + i), m0 = VLOAD(V, m + i);            \
            V w1 = VLOAD(V, w + i + K), g1 = VLOAD(V, g + i + K);                          \
            V m1 = VLOAD(V, m + i + K);                                                    \
            cs0 += w0 * g0, cs1 += w1 * g1, qs0 += w0 * w0, qs1 += w1 * w1;                \
            gs0 += g0 * g0, gs1 += g1 * g1, as0 += w0 * m0, as1 += w1 * m1;                \
            bs0 += m0 * m0, bs1 += m1 * m1, ds0 += m0 * g0, ds1 += m1 * g1;                \
        }                                                                                  \
        double c0 = 0, ww = 0, gg = 0, wm = 0, mm = 0, mg = 0;                             \
        for (; i < n; i++) {                                                               \
            c0 += (double)w[i] * g[i], ww += (double)w[i] * w[i];                          \
            gg += (double)g[i] * g[i], wm += (double)w[i] * m[i];                          \
            mm += (double)m[i] * m[i], mg += (double)m[i] * g[i];                          \
        }                                                                                  \
        c0 += HSUM(K, cs0 + cs1), ww += HSUM(K, qs0 + qs1), gg += HSUM(K, gs0 + gs1);      \
        wm += HSUM(K, as0 + as1), mm += HSUM(K, bs0 + bs1), mg += HSUM(K, ds0 + ds1);      \
        if (!isfinite(c0 + ww + gg + wm + mm + mg)) { /* overflow, or a non-finite entry */ \
            c0 = ww = gg = wm = mm = mg = 0;                                               \
            for (int64_t k = 0; k < n; k++) {                                              \
                c0 += (double)w[k] * g[k], ww += (double)w[k] * w[k];                      \
                gg += (double)g[k] * g[k], wm += (double)w[k] * m[k];                      \
                mm += (double)m[k] * m[k], mg += (double)m[k] * g[k];                      \
            }                                                                              \
            if (!isfinite(c0 + ww + gg + wm + mm + mg)) return 0;                          \
        }                                                                                  \
        /* s = sg g + wd w, c = <w, s>, r = s - c w, m' = b1 m + (1 - b1) r */            \
        const double c = sg * c0 + wd * ww;                                                \
        const double rr = (gg + 2 * sg * wd * c0 + wd * wd * ww) - c * c * (2 - ww);       \
        const double mr = sg * mg + (wd - c) * wm;                                         \
        const double parts = b1d * b1d * mm + 2 * b1d * k1d * fabs(mr) + k1d * k1d * rr;   \
        const double mmn = b1d * b1d * mm + 2 * b1d * k1d * mr + k1d * k1d * rr;           \
        const double wmn = b1d * wm + k1d * c * (1 - ww);                                  \
        const double tiny = sizeof(T) == 4 ? 0x1p-10 : 0x1p-24;                            \
        const double cp = gg + wd * wd * ww + 2 * fabs(sg * wd * c0) + c * c * (2 + ww);   \
        if (!(rr > tiny * cp) || !(mmn > tiny * parts)) /* r or m' nearly cancels */       \
            return adam_explicit_##S(w, g, m, v, vmax, n, p, lr, bias1, bias2s, mbuf, ubuf, \
                                     c, ww);                                               \
        const T vn = (T)(p->beta2 * (double)*v + (1 - p->beta2) * rr);                     \
        T vm = vn;                                                                         \
        if (p->amsgrad) vm = *vmax > vn ? *vmax : vn;                                      \
        const double a = lr / bias1 / (sqrt((double)vm) / bias2s + p->eps);                \
        const double sc = fmax(1.0, a), Ad = 1 / sc, Bd = a / sc;                          \
        const double uu = Ad * Ad * ww - 2 * Ad * Bd * wmn + Bd * Bd * mmn;                \
        if (!(uu > (sizeof(T) == 4 ? 0x1p-6 : 0x1p-20) * (Ad * Ad * ww + Bd * Bd * parts))) \
            return adam_explicit_##S(w, g, m, v, vmax, n, p, lr, bias1, bias2s, mbuf, ubuf, \
                                     c, ww);                                               \
        if (!isfinite(uu) || !isfinite((double)vm)) return 0;                              \
        const double um = Ad * wmn - Bd * mmn;                                             \
        if (nw) /* the next row's first lines; the hardware prefetcher streams the rest */ \
            for (int64_t o = 0; o < n && o < 1024 / (int64_t)sizeof(T); o += 64 / sizeof(T)) { \
                __builtin_prefetch(nw + o, 0, 2);                                          \
                __builtin_prefetch(ng + o, 0, 2);                                          \
                __builtin_prefetch(nm + o, 1, 2);                                          \
            }                                                                              \
        /* pass 2: w' = u / |u|, m <- m' - (<u, m'> / |u|^2) u */                           \
        const T sgT = (T)sg, wdT = (T)wd, cT = (T)c, b1 = (T)b1d, k1 = (T)k1d;             \
        const T A = (T)Ad, B = (T)Bd, inv = (T)(1 / sqrt(uu)), t = (T)(um / uu);           \
        _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                              \
            const T rk = (sgT * g[k] + wdT * w[k]) - cT * w[k];                            \
            const T mk = b1 * m[k] + k1 * rk, uk = A * w[k] - B * mk;                      \
            w[k] = uk * inv;                                                               \
            m[k] = mk - t * uk;                                                            \
        }                                                                                  \
        *v = vn;                                                                           \
        if (p->amsgrad) *vmax = vm;                                                        \
        return 1;                                                                          \
    }

DEFINE_ADAM_ROW(f32, float, vf32)
DEFINE_ADAM_ROW(f64, double, vf64)

static int adam_row_half(void *wv, const void *gv, float *m, float *v, float *vmax, int64_t n,
                         const adam_params_t *p, double lr, double bias1, double bias2s,
                         float *scratch, int bf16) {
    float *wf = scratch, *gf = scratch + n, *mbuf = scratch + 2 * n, *ubuf = scratch + 3 * n;
    half_to_f32((const uint16_t *)wv, wf, n, bf16);
    half_to_f32((const uint16_t *)gv, gf, n, bf16);
    if (!adam_row_f32(wf, gf, m, v, vmax, n, p, lr, bias1, bias2s, mbuf, ubuf, NULL, NULL, NULL))
        return 0;
    f32_to_half(wf, (uint16_t *)wv, n, bf16);
    return 1;
}

static const size_t ELEMENT_SIZE[4] = {4, 8, 2, 2};

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
        /* the next row, prefetched while this one is in the second pass */
        const int more = r + 1 < r1;
        const char *nw = more ? wr + (size_t)n * es : NULL, *ng = more ? gr + (size_t)n * es : NULL;
        const char *nm = more ? mr + (size_t)n * ss : NULL;
        int ok;
        if (dtype == 0) {
            float *s = (float *)scratch;
            ok = adam_row_f32((float *)wr, (const float *)gr, (float *)mr, (float *)vr,
                              (float *)xr, n, p, rate, bias1[t], bias2s[t], s, s + n,
                              (const float *)nw, (const float *)ng, (const float *)nm);
        } else if (dtype == 1) {
            double *s = (double *)scratch;
            ok = adam_row_f64((double *)wr, (const double *)gr, (double *)mr, (double *)vr,
                              (double *)xr, n, p, rate, bias1[t], bias2s[t], s, s + n,
                              (const double *)nw, (const double *)ng, (const double *)nm);
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
