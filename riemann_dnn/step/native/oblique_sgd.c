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
#include "rdnn_kernel.h"

typedef struct {
    double momentum, dampening, weight_decay, sign; /* sign: -1 when maximizing */
    int nesterov, first;
} params_t;

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

/* The momentum step of one row once c = <w, g'> is known (see DEFINE_ROW), specialised at
   compile time on the flags, so that each case runs only its own arithmetic:
     v = (w - lr d) / max(1, lr);  w' = v / |v|;  m' = m - <w', m> w'
   returns 1 when stepped, 0 when left untouched (|v| zero or not finite). */
#define DEFINE_MOMENTUM(NAME, T, V)                                                        \
    static inline __attribute__((always_inline)) int NAME##_body(                          \
        T *restrict w, const T *restrict g, T *restrict m, int64_t n, const params_t *p,   \
        double lr, double c, T *restrict mbuf, T *restrict vbuf, const int first,          \
        const int nesterov, const int has_wd, const int big) {                             \
        enum { K = sizeof(V) / sizeof(T) };                                                \
        const T cT = (T)c, mu = (T)p->momentum, keep = (T)(1 - p->dampening);              \
        const T wdT = (T)p->weight_decay, sgT = (T)p->sign;                                \
        const double s = big ? lr : 1.0; /* big: lr > 1 */                                 \
        const T ws = (T)(1 / s), ls = (T)(lr / s);                                         \
        V vs0 = (V){0}, vs1 = (V){0}, ms0 = (V){0}, ms1 = (V){0};                          \
        int64_t i = 0;                                                                     \
        for (; i + 2 * K <= n; i += 2 * K) {                                               \
            for (int u = 0; u < 2; u++) {                                                  \
                const int64_t j = i + u * K;                                               \
                V wv = VLOAD(V, w + j), gi = sgT * VLOAD(V, g + j);                        \
                if (has_wd) gi += wdT * wv;                                                \
                V ri = gi - cT * wv, mi = ri;                                              \
                if (!first) mi = mu * VLOAD(V, m + j) + keep * ri;                         \
                V di = nesterov ? ri + mu * mi : mi;                                       \
                V vi = big ? ws * wv - ls * di : wv - ls * di;                             \
                VSTORE(mbuf + j, mi);                                                      \
                VSTORE(vbuf + j, vi);                                                      \
                if (u == 0) {                                                              \
                    vs0 += vi * vi;                                                        \
                    ms0 += vi * mi;                                                        \
                } else {                                                                   \
                    vs1 += vi * vi;                                                        \
                    ms1 += vi * mi;                                                        \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        double vv = 0, vm = 0;                                                             \
        for (; i < n; i++) {                                                               \
            T gi = sgT * g[i];                                                             \
            if (has_wd) gi += wdT * w[i];                                                  \
            T ri = gi - cT * w[i];                                                         \
            T mi = first ? ri : mu * m[i] + keep * ri;                                     \
            T di = nesterov ? ri + mu * mi : mi;                                           \
            T vi = big ? ws * w[i] - ls * di : w[i] - ls * di;                             \
            mbuf[i] = mi;                                                                  \
            vbuf[i] = vi;                                                                  \
            vv += (double)vi * vi;                                                         \
            vm += (double)vi * mi;                                                         \
        }                                                                                  \
        vv += HSUM_TREE(K, vs0 + vs1);                                                     \
        vm += HSUM_TREE(K, ms0 + ms1);                                                     \
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
    }                                                                                      \
    static int NAME(T *restrict w, const T *restrict g, T *restrict m, int64_t n,          \
                    const params_t *p, double lr, double c, T *restrict mbuf,              \
                    T *restrict vbuf) {                                                    \
        const int first = p->first, nest = p->nesterov, wd = p->weight_decay != 0;         \
        const int big = lr > 1; /* maximize: the sign, one code for both */                \
        if (big || nest) /* the rarer cases: one generic body */                           \
            return NAME##_body(w, g, m, n, p, lr, c, mbuf, vbuf, first, nest, wd, big);    \
        if (first)                                                                         \
            return wd ? NAME##_body(w, g, m, n, p, lr, c, mbuf, vbuf, 1, 0, 1, 0)          \
                      : NAME##_body(w, g, m, n, p, lr, c, mbuf, vbuf, 1, 0, 0, 0);         \
        return wd ? NAME##_body(w, g, m, n, p, lr, c, mbuf, vbuf, 0, 0, 1, 0)              \
                  : NAME##_body(w, g, m, n, p, lr, c, mbuf, vbuf, 0, 0, 0, 0);             \
    }

DEFINE_MOMENTUM(momentum_f32, float, vf32)
DEFINE_MOMENTUM(momentum_f64, double, vf64)

/* The momentum step of one row in two passes and no scratch: the first sums the Gram matrix
   of (w, g, m) -- <w,w>, <w,g>, <g,g>, and <w,m>, <g,m>, <m,m> after the first step --
   from which c = <w, g'>, |v|^2 and <v, m'> follow in closed form (v, m' and d are linear
   in w, g and m); the second writes w' and m' in place, with the arithmetic of
   DEFINE_MOMENTUM. Returns -1, having written nothing, when a sum is not finite or when
   |v|^2 is small against its terms (a and d nearly cancel): DEFINE_MOMENTUM's exact path
   then takes the row. */
#define DEFINE_MOMENTUM_FAST(NAME, T, V)                                                   \
    static inline __attribute__((always_inline)) int NAME##_body(                          \
        T *restrict w, const T *restrict g, T *restrict m, int64_t n, const params_t *p,   \
        double lr, const int first, const int nesterov, const int has_wd, const int big) { \
        enum { K = sizeof(V) / sizeof(T) };                                                \
        V sww = (V){0}, swg = (V){0}, sgg = (V){0}, swm = (V){0}, sgm = (V){0},            \
          smm = (V){0};                                                                    \
        int64_t i = 0;                                                                     \
        for (; i + K <= n; i += K) {                                                       \
            V wv = VLOAD(V, w + i), gv = VLOAD(V, g + i);                                  \
            sww += wv * wv;                                                                \
            swg += wv * gv;                                                                \
            sgg += gv * gv;                                                                \
            if (!first) {                                                                  \
                V mv = VLOAD(V, m + i);                                                    \
                swm += wv * mv;                                                            \
                sgm += gv * mv;                                                            \
                smm += mv * mv;                                                            \
            }                                                                              \
        }                                                                                  \
        double ww = HSUM_TREE(K, sww), wg = HSUM_TREE(K, swg), gg = HSUM_TREE(K, sgg);     \
        double wm = 0, gm = 0, mm = 0;                                                     \
        if (!first)                                                                        \
            wm = HSUM_TREE(K, swm), gm = HSUM_TREE(K, sgm), mm = HSUM_TREE(K, smm);        \
        for (; i < n; i++) {                                                               \
            ww += (double)w[i] * w[i];                                                     \
            wg += (double)w[i] * g[i];                                                     \
            gg += (double)g[i] * g[i];                                                     \
            if (!first) {                                                                  \
                wm += (double)w[i] * m[i];                                                 \
                gm += (double)g[i] * m[i];                                                 \
                mm += (double)m[i] * m[i];                                                 \
            }                                                                              \
        }                                                                                  \
        if (!isfinite(ww + wg + gg + wm + gm + mm)) return -1;                             \
        /* coefficients on (w, g, m): g' = sg g + wd w, r = g' - c w, m' = mu m + keep r   \
           (m' = r first), d = m' (r + mu m' with Nesterov), v = ws w - ls d */            \
        const double sg = p->sign, wd = has_wd ? p->weight_decay : 0.0;                   \
        const double mu = p->momentum, keep = 1 - p->dampening;                            \
        const double c = sg * wg + wd * ww;                                                \
        const double rw = wd - c, rg = sg;                                                 \
        const double mw = first ? rw : keep * rw, mg = first ? rg : keep * rg,             \
                     mmc = first ? 0.0 : mu;                                               \
        const double dw = nesterov ? rw + mu * mw : mw, dg = nesterov ? rg + mu * mg : mg, \
                     dm = nesterov ? mu * mmc : mmc;                                       \
        const double s = big ? lr : 1.0, ws = 1 / s, ls = lr / s;                          \
        const double vw = ws - ls * dw, vg = -ls * dg, vm_ = -ls * dm;                     \
        /* G(a, b) = a^T Gram b */                                                         \
        const double gw_v = vw * ww + vg * wg + vm_ * wm, gg_v = vw * wg + vg * gg + vm_ * gm, \
                     gm_v = vw * wm + vg * gm + vm_ * mm;                                  \
        const double vv = vw * gw_v + vg * gg_v + vm_ * gm_v;                              \
        const double vmp = mw * gw_v + mg * gg_v + mmc * gm_v; /* <v, m'> */               \
        const double scale = fabs(vw) * sqrt(ww) + fabs(vg) * sqrt(gg) + fabs(vm_) * sqrt(mm); \
        if (!(vv > 0x1p-6 * scale * scale) || !isfinite(vv + vmp)) return -1;              \
        const double inv = 1 / sqrt(vv);                                                   \
        const T invT = (T)inv, xmT = (T)(vmp * inv), cT = (T)c, muT = (T)mu,               \
                keepT = (T)keep, wdT = (T)wd, wsT = (T)ws, lsT = (T)ls, sgT = (T)sg;       \
        _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                              \
            T gi = sgT * g[k]; /* sg = -1 when maximizing: exact, and one code for both */   \
            if (has_wd) gi += wdT * w[k];                                                  \
            T ri = gi - cT * w[k];                                                         \
            T mi = first ? ri : muT * m[k] + keepT * ri;                                   \
            T di = nesterov ? ri + muT * mi : mi;                                          \
            T vi = big ? wsT * w[k] - lsT * di : w[k] - lsT * di;                          \
            T xk = vi * invT;                                                              \
            w[k] = xk;                                                                     \
            m[k] = mi - xmT * xk;                                                          \
        }                                                                                  \
        return 1;                                                                          \
    }                                                                                      \
    static int NAME(T *restrict w, const T *restrict g, T *restrict m, int64_t n,          \
                    const params_t *p, double lr) {                                        \
        const int first = p->first, nest = p->nesterov, wd = p->weight_decay != 0;         \
        const int big = lr > 1; /* maximize: the sign, one code for both */                \
        if (big || nest) /* the rarer cases: one generic body */                           \
            return NAME##_body(w, g, m, n, p, lr, first, nest, wd, big);                   \
        if (first)                                                                         \
            return wd ? NAME##_body(w, g, m, n, p, lr, 1, 0, 1, 0)                         \
                      : NAME##_body(w, g, m, n, p, lr, 1, 0, 0, 0);                        \
        return wd ? NAME##_body(w, g, m, n, p, lr, 0, 0, 1, 0)                             \
                  : NAME##_body(w, g, m, n, p, lr, 0, 0, 0, 0);                            \
    }

DEFINE_MOMENTUM_FAST(momentum_fast_f32, float, vf32)
DEFINE_MOMENTUM_FAST(momentum_fast_f64, double, vf64)

/* one row in T precision (float or double, V its vector); returns 1 when stepped, 0 when
   left untouched. mbuf, vbuf: scratch rows of length n. With momentum only <w, g> (and
   <w, w> with weight decay) is summed first: a non-finite gradient or point makes it
   non-finite (inf * 0 is NaN); without, <w, w> and <g, g> give the update's norm. */
#define DEFINE_ROW(NAME, T, V, MOMENTUM, FAST)                                             \
    static int NAME(T *restrict w, const T *restrict g, T *restrict m, int64_t n,          \
                    const params_t *p, double lr, T *restrict mbuf, T *restrict vbuf) {    \
        enum { K = sizeof(V) / sizeof(T), U = 4 };                                         \
        if (p->momentum != 0) {                                                            \
            const int stepped = FAST(w, g, m, n, p, lr);                                   \
            if (stepped >= 0) return stepped;                                              \
        }                                                                                  \
        const double sg = p->sign, wd = p->weight_decay;                                   \
        const int all = p->momentum == 0 || wd != 0, squares = p->momentum == 0;           \
        V cs[U], qs[U], gs[U];                                                             \
        for (int u = 0; u < U; u++) cs[u] = qs[u] = gs[u] = (V){0};                        \
        int64_t i = 0;                                                                     \
        if (squares) {                                                                     \
            for (; i + U * K <= n; i += U * K)                                             \
                for (int u = 0; u < U; u++) {                                              \
                    V wv = VLOAD(V, w + i + u * K), gv = VLOAD(V, g + i + u * K);          \
                    cs[u] += wv * gv;                                                      \
                    qs[u] += wv * wv;                                                      \
                    gs[u] += gv * gv;                                                      \
                }                                                                          \
        } else if (all) {                                                                  \
            for (; i + U * K <= n; i += U * K)                                             \
                for (int u = 0; u < U; u++) {                                              \
                    V wv = VLOAD(V, w + i + u * K), gv = VLOAD(V, g + i + u * K);          \
                    cs[u] += wv * gv;                                                      \
                    qs[u] += wv * wv;                                                      \
                }                                                                          \
        } else {                                                                           \
            for (; i + U * K <= n; i += U * K)                                             \
                for (int u = 0; u < U; u++)                                                \
                    cs[u] += VLOAD(V, w + i + u * K) * VLOAD(V, g + i + u * K);            \
        }                                                                                  \
        for (; i + K <= n; i += K) {                                                       \
            V wv = VLOAD(V, w + i), gv = VLOAD(V, g + i);                                  \
            cs[0] += wv * gv;                                                              \
            if (all) qs[0] += wv * wv;                                                     \
            if (squares) gs[0] += gv * gv;                                                 \
        }                                                                                  \
        double c0 = 0, ww = 0, g0 = 0;                                                     \
        for (; i < n; i++) {                                                               \
            c0 += (double)w[i] * g[i];                                                     \
            ww += (double)w[i] * w[i];                                                     \
            g0 += (double)g[i] * g[i];                                                     \
        }                                                                                  \
        c0 += HSUM_TREE(K, (cs[0] + cs[1]) + (cs[2] + cs[3]));                             \
        if (all) ww += HSUM_TREE(K, (qs[0] + qs[1]) + (qs[2] + qs[3]));                    \
        if (squares) g0 += HSUM_TREE(K, (gs[0] + gs[1]) + (gs[2] + gs[3]));                \
        if (!isfinite(c0 + ww + g0)) {                                                     \
            if (sizeof(T) == 8) return 0;                                                  \
            double sums[3];                                                                \
            sums_double_f32((const float *)w, (const float *)g, n, sums);                  \
            c0 = sums[0], ww = sums[1], g0 = sums[2];                                      \
            if (!isfinite(c0 + ww + g0)) return 0;                                         \
        }                                                                                  \
        /* the gradient g' = sg g + wd w: c = <w, g'>, gg = <g', g'> */                    \
        const double c = sg * c0 + wd * ww, gg = g0 + 2 * sg * wd * c0 + wd * wd * ww;     \
        if (p->momentum != 0) return MOMENTUM(w, g, m, n, p, lr, c, mbuf, vbuf);           \
        const T sgT = (T)sg, wdT = (T)wd;                                                  \
        /* x = a w - b g' (|x|^2 in double: no overflow short of lr |g| ~ 1e150) */         \
        double a = 1 + lr * c, b = lr;                                                     \
        double big = a * a * ww + b * b * gg;                                              \
        double nn = big - 2 * a * b * c;                                                   \
        /* where a w and b g' nearly cancel, rounding the written row in T would move its  \
           norm off 1 by eps_T sqrt(big / nn): form the row in T (scaled so that neither  \
           coefficient exceeds 1), sum its squares */                                      \
        if (!(nn > (sizeof(T) == 4 ? 0x1p-6 : 0x1p-20) * big)) {                           \
            const double s = fmax(1.0, fmax(fabs(a), fabs(b)));                            \
            const T aT = (T)(a / s), bT = (T)(b / s);                                      \
            double ns = 0;                                                                 \
            for (int64_t k = 0; k < n; k++) {                                              \
                vbuf[k] = aT * w[k] - bT * (sgT * g[k] + wdT * w[k]);                      \
                ns += (double)vbuf[k] * vbuf[k];                                           \
            }                                                                              \
            if (!(ns > 0) || !isfinite(ns)) return 0;                                      \
            const T invT = (T)(1 / sqrt(ns));                                              \
            _Pragma("omp simd") for (int64_t k = 0; k < n; k++) w[k] = vbuf[k] * invT;     \
            return 1;                                                                      \
        }                                                                                  \
        if (!(nn > 0) || !isfinite(nn)) return 0;                                          \
        const double inv = 1 / sqrt(nn);                                                   \
        const T A = (T)(a * inv), B = (T)(b * inv);                                        \
        if (sg == 1 && wd == 0) {                                                          \
            _Pragma("omp simd") for (int64_t k = 0; k < n; k++) w[k] = A * w[k] - B * g[k]; \
            return 1;                                                                      \
        }                                                                                  \
        _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                              \
            T gk = sgT * g[k] + wdT * w[k];                                                \
            w[k] = A * w[k] - B * gk;                                                      \
        }                                                                                  \
        return 1;                                                                          \
    }

DEFINE_ROW(row_f32, float, vf32, momentum_f32, momentum_fast_f32)
DEFINE_ROW(row_f64, double, vf64, momentum_f64, momentum_fast_f64)

/* A plain (Euclidean) row: torch.optim.SGD's update of w, in its order of roundings (ATen's
   add with alpha is a fused multiply-add: a + alpha b = fma(alpha, b, a)), in place -- a
   non-finite result is written as torch writes it (the optimizer checks every gradient
   first); always returns 1:
     g' = sign g + wd w;  m <- (first) g', else mu m + (1 - tau) g';  d = nesterov ? g' + mu m : m
     (d = g' without momentum);  w <- w - lr d. */
#define DEFINE_PLAIN(NAME, T, FMA)                                                         \
    static inline __attribute__((always_inline)) int NAME##_body(                          \
        T *restrict w, const T *restrict g, T *restrict m, int64_t n, const params_t *p,   \
        double lr, const int has_wd, const int has_m, const int first, const int nesterov) { \
        const T sgT = (T)p->sign, wdT = (T)p->weight_decay, mu = (T)p->momentum;           \
        const T keep = (T)(1 - p->dampening), nlr = (T)(-lr);                              \
        _Pragma("omp simd") for (int64_t k = 0; k < n; k++) {                              \
            T gk = sgT * g[k];                                                             \
            if (has_wd) gk = FMA(wdT, w[k], gk);                                           \
            if (has_m) {                                                                   \
                T mk = gk;                                                                 \
                if (!first) {                                                              \
                    T held = mu * m[k];                                                    \
                    mk = FMA(keep, gk, held);                                              \
                }                                                                          \
                m[k] = mk;                                                                 \
                gk = nesterov ? FMA(mu, mk, gk) : mk;                                      \
            }                                                                              \
            w[k] = FMA(nlr, gk, w[k]);                                                     \
        }                                                                                  \
        return 1;                                                                          \
    }                                                                                      \
    static int NAME(T *restrict w, const T *restrict g, T *restrict m, int64_t n,          \
                    const params_t *p, double lr, T *restrict mbuf, T *restrict vbuf) {    \
        (void)mbuf;                                                                        \
        (void)vbuf;                                                                        \
        const int wd = p->weight_decay != 0;                                               \
        if (p->momentum == 0)                                                              \
            return wd ? NAME##_body(w, g, m, n, p, lr, 1, 0, 0, 0)                         \
                      : NAME##_body(w, g, m, n, p, lr, 0, 0, 0, 0);                        \
        if (p->first)                                                                      \
            return p->nesterov ? NAME##_body(w, g, m, n, p, lr, wd, 1, 1, 1)               \
                               : NAME##_body(w, g, m, n, p, lr, wd, 1, 1, 0);              \
        if (p->nesterov)                                                                   \
            return wd ? NAME##_body(w, g, m, n, p, lr, 1, 1, 0, 1)                         \
                      : NAME##_body(w, g, m, n, p, lr, 0, 1, 0, 1);                        \
        return wd ? NAME##_body(w, g, m, n, p, lr, 1, 1, 0, 0)                             \
                  : NAME##_body(w, g, m, n, p, lr, 0, 1, 0, 0);                            \
    }

DEFINE_PLAIN(plain_f32, float, fmaf)
DEFINE_PLAIN(plain_f64, double, fma)

static int row_half(void *wv, const void *gv, float *m, int64_t n, const params_t *p,
                    double lr, float *scratch, int bf16, int normalize) {
    uint16_t *w = (uint16_t *)wv;
    const uint16_t *g = (const uint16_t *)gv;
    float *wf = scratch, *gf = scratch + n, *mbuf = scratch + 2 * n, *vbuf = scratch + 3 * n;
    half_to_f32(w, wf, n, bf16);
    half_to_f32(g, gf, n, bf16);
    if (!(normalize ? row_f32 : plain_f32)(wf, gf, m, n, p, lr, mbuf, vbuf)) return 0;
    f32_to_half(wf, w, n, bf16);
    return 1;
}

#ifndef PREFETCH
#define PREFETCH 1024
#endif

/* The arguments of one step_all call, for its rdnn_rows_fn. */
typedef struct {
    const int64_t *ncols;
    const int8_t *normalize;
    void *const *w;
    const void *const *g;
    void *const *m;
    int dtype;
    const double *const *lr;
    const int64_t *rows_per_lr;
    params_t p;
} sgd_call_t;

/* Step rows [r0, r1) of tensor t; returns the number of rows left untouched. */
static int64_t step_rows(const void *ctx, int64_t t, int64_t r0, int64_t r1, void *scratch) {
    const sgd_call_t *c = (const sgd_call_t *)ctx;
    void *const *w = c->w, *const *m = c->m;
    const void *const *g = c->g;
    const int8_t *normalize = c->normalize;
    const int dtype = c->dtype;
    const double *const *lr = c->lr;
    const int64_t *rows_per_lr = c->rows_per_lr;
    const params_t *p = &c->p;
    const int64_t n = c->ncols[t];
    const size_t es = RDNN_ELEMENT_SIZE[dtype];
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
   caller keeps them, e.g. a float64 tensor of one rate per copy). Rows are split among
   `nthreads` threads as rdnn_split_rows does. Sets *found = 1 (if found is not NULL) when
   some row was left untouched; returns the number of such rows, or -1 on bad arguments /
   no memory. */
static int64_t step_all(int64_t ntensors, const int64_t *rows, const int64_t *ncols,
                                  const int8_t *normalize,
                                  void *const *w, const void *const *g, void *const *m,
                                  int dtype, const double *const *lr, const int64_t *rows_per_lr,
                                  double momentum, double dampening, int nesterov,
                                  double weight_decay, int maximize, int first, int nthreads,
                                  float *found) {
    if (ntensors <= 0) return 0;
    if (dtype < 0 || dtype > 3 || (momentum != 0 && !m) || !lr) return -1;
    for (int64_t t = 0; t < ntensors; t++)
        if (rows_per_lr[t] < 1 || !lr[t]) return -1;
    const sgd_call_t c = {
        .ncols = ncols, .normalize = normalize, .w = w, .g = g, .m = m, .dtype = dtype,
        .lr = lr, .rows_per_lr = rows_per_lr,
        .p = {momentum, dampening, weight_decay, maximize ? -1.0 : 1.0, nesterov, first}};
    return rdnn_split_rows(ntensors, rows, ncols, nthreads, step_rows, &c, found);
}

RDNN_API int64_t rdnn_oblique_sgd(int64_t ntensors, const int64_t *rows, const int64_t *ncols,
                                  const int8_t *normalize,
                                  void *const *w, const void *const *g, void *const *m,
                                  int dtype, const double *const *lr, const int64_t *rows_per_lr,
                                  double momentum, double dampening, int nesterov,
                                  double weight_decay, int maximize, int first, int nthreads,
                                  float *found) {
    return step_all(ntensors, rows, ncols, normalize, w, g, m, dtype, lr, rows_per_lr,
                    momentum, dampening, nesterov, weight_decay, maximize, first, nthreads,
                    found);
}

/* Whether every entry of the `ntensors` arrays g[t] (numel[t] entries of dtype) is finite:
   one read-only pass of the exponent bits (no write-back, unlike GradScaler's kernel), by
   blocks so that a bad entry ends the scan early. An array is walked as FINITE_PARTS equal
   parts in lockstep, FINITE_RUN entries of each in turn: more memory streams in flight than
   one walk from end to end (a fifth to a third faster on one thread of the development VM).
   Returns 1 when all are finite, else 0. */
#define FINITE_PARTS 4
#define FINITE_RUN 256
#define DEFINE_FINITE(NAME, T, U, EXPONENT)                                                \
    static int NAME##_span(const U *restrict bits, int64_t n) {                            \
        for (int64_t b = 0; b < n; b += 4096) {                                            \
            const int64_t e = b + 4096 < n ? b + 4096 : n;                                 \
            U bad = 0; /* an all-ones exponent is inf or NaN; or-ing has no latency chain */ \
            _Pragma("omp simd reduction(| : bad)") for (int64_t k = b; k < e; k++)         \
                bad |= (U)((bits[k] & EXPONENT) == EXPONENT);                              \
            if (bad) return 0;                                                             \
        }                                                                                  \
        return 1;                                                                          \
    }                                                                                      \
    static int NAME(const T *restrict g, int64_t n) {                                      \
        const U *restrict bits = (const U *)g;                                             \
        const int64_t part = n / FINITE_PARTS / FINITE_RUN * FINITE_RUN;                   \
        for (int64_t b = 0; b < part; b += 16 * FINITE_RUN) {                              \
            const int64_t e = b + 16 * FINITE_RUN < part ? b + 16 * FINITE_RUN : part;     \
            U bad = 0;                                                                     \
            for (int64_t c = b; c < e; c += FINITE_RUN)                                    \
                for (int s = 0; s < FINITE_PARTS; s++) {                                   \
                    const U *restrict p = bits + s * part;                                 \
                    _Pragma("omp simd reduction(| : bad)") for (int64_t k = c;             \
                                                                 k < c + FINITE_RUN; k++)  \
                        bad |= (U)((p[k] & EXPONENT) == EXPONENT);                         \
                }                                                                          \
            if (bad) return 0;                                                             \
        }                                                                                  \
        return NAME##_span(bits + FINITE_PARTS * part, n - FINITE_PARTS * part);           \
    }
DEFINE_FINITE(finite_f32, float, uint32_t, 0x7f800000u)
DEFINE_FINITE(finite_f64, double, uint64_t, 0x7ff0000000000000ull)
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

/* A prepared step's arguments in one struct (laid out by riemann_dnn.step.native's
   PreparedStep), so that a call passes one pointer: the caller rewrites only what changes
   (the gradients' addresses, the hyper-parameters). */
typedef struct {
    int64_t ntensors;
    const int64_t *rows, *ncols, *numel, *rows_per_lr;
    const int8_t *normalize;
    void *const *w;
    const void *const *g;
    void *const *m;
    const double *const *lr;
    float *found;
    double momentum, dampening, weight_decay;
    int32_t dtype, nesterov, maximize, first, nthreads, check;
} rdnn_args;

/* rdnn_oblique_sgd on `a`; with a->check, every gradient is checked first and -2 returned,
   with nothing written, when one holds inf or NaN. */
RDNN_API int64_t rdnn_step(const rdnn_args *a) {
    if (a->check && !rdnn_all_finite(a->ntensors, a->numel, a->g, a->dtype)) return -2;
    return step_all(a->ntensors, a->rows, a->ncols, a->normalize, a->w, a->g, a->m, a->dtype,
                    a->lr, a->rows_per_lr, a->momentum, a->dampening, a->nesterov,
                    a->weight_decay, a->maximize, a->first, a->nthreads, a->found);
}

RDNN_API int rdnn_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
