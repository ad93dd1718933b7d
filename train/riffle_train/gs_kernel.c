/* CPU kernels for two-factor GS chains of 8 x 8 blocks (riffle_train.gs_kernel).
 *
 * A chain Q = F1 F0 on n = 64 s features: F0's block c acts on features 8c .. 8c + 8, F1's
 * block j on features t k + j (t < 8, k = n / 8 = 8 s). Feature 8 (s r + g) + e (r, e < 8,
 * g < s) is entry (r, e) of group g: F0's block s r + g holds the entries (r, .) of group g,
 * F1's block 8 g + e the entries (., e), so each group of 64 features is closed under both
 * factors (docs/training.md, "Grouped GS chains"). Every kernel works one group at a time over
 * all rows, with the group's blocks rearranged on the stack as vectors of eight floats (GCC
 * and Clang vector extensions: one AVX register with -march=native on x86-64, two SSE or NEON
 * registers elsewhere), so that every step is a vector multiply-add:
 *
 *   Z[r][e'] = sum_e  B0[s r + g][e'][e] X[r][e]        (factor 0)
 *   Y[r'][e] = sum_r  B1[8 g + e][r'][r] Z[r][e]        (factor 1)
 *
 * Blocks are (k, 8, 8) row-major, B[c][out][in]; rows are n floats apart. Built at first use
 * with the system C compiler (gs_kernel.py); nothing here allocates.
 */
#include <stdint.h>
#include <string.h>

#define B 8
typedef float v8 __attribute__((vector_size(32)));

static inline v8 load(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(float *p, v8 v) { memcpy(p, &v, sizeof v); }

/* The group's blocks as vectors: b0t[r][e] = (B0[s r + g][o][e], o < 8) (factor 0
 * transposed: what X[r][e] multiplies), b0n[r][o] = B0[s r + g][o][.] (a row),
 * b1v[o][r] = (B1[8 g + e][o][r], e < 8) (factor 1 across its eight blocks). */
struct group {
    v8 b0t[B][B], b0n[B][B], b1v[B][B];
};

static void group_blocks(const float *b0, const float *b1, int64_t s, int64_t g, struct group *q) {
    for (int r = 0; r < B; r++) {
        const float *c = b0 + (s * r + g) * B * B;
        for (int o = 0; o < B; o++) q->b0n[r][o] = load(c + o * B);
        for (int e = 0; e < B; e++)
            for (int o = 0; o < B; o++) q->b0t[r][e][o] = c[o * B + e];
    }
    for (int e = 0; e < B; e++) {
        const float *j = b1 + (B * g + e) * B * B;
        for (int o = 0; o < B; o++)
            for (int r = 0; r < B; r++) q->b1v[o][r][e] = j[o * B + r];
    }
}

/* z[r] = F0's block s r + g applied to the entries (r, .) of the group in row x. */
static inline void factor0(const float *x, int64_t s, int64_t g, const struct group *q, v8 z[B]) {
    for (int r = 0; r < B; r++) {
        const float *xr = x + B * (s * r + g);
        v8 acc = q->b0t[r][0] * xr[0];
        for (int e = 1; e < B; e++) acc += q->b0t[r][e] * xr[e];
        z[r] = acc;
    }
}

/* y <- Q x (transpose 0) or Q^T x (transpose 1) for `rows` rows of n = 64 s features, the
 * features of groups g0 .. g1 only (threads take disjoint ranges of groups). */
void gs8_apply(const float *x, float *y, int64_t rows, int64_t s, int64_t g0, int64_t g1,
               const float *b0, const float *b1, int transpose) {
    const int64_t n = 64 * s;
    struct group q;
    for (int64_t g = g0; g < g1; g++) {
        group_blocks(b0, b1, s, g, &q);
        for (int64_t t = 0; t < rows; t++) {
            const float *xt = x + t * n;
            float *yt = y + t * n;
            v8 z[B];
            if (!transpose) {
                factor0(xt, s, g, &q, z);
                for (int o = 0; o < B; o++) {
                    v8 acc = q.b1v[o][0] * z[0];
                    for (int r = 1; r < B; r++) acc += q.b1v[o][r] * z[r];
                    store(yt + B * (s * o + g), acc);
                }
            } else {
                /* z[r] = sum_o B1[8g+e][o][r] X[o][e]; X'[r] = sum_o z[r][o] B0[s r + g][o][.] */
                for (int r = 0; r < B; r++) z[r] = (v8){0};
                for (int o = 0; o < B; o++) {
                    v8 xo = load(xt + B * (s * o + g));
                    for (int r = 0; r < B; r++) z[r] += q.b1v[o][r] * xo;
                }
                for (int r = 0; r < B; r++) {
                    v8 acc = q.b0n[r][0] * z[r][0];
                    for (int o = 1; o < B; o++) acc += q.b0n[r][o] * z[r][o];
                    store(yt + B * (s * r + g), acc);
                }
            }
        }
    }
}

/* For y = Q x: dx <- Q^T dy (when dx is not NULL) and the gradients of both factors' blocks,
 * db0 and db1 ((k, 8, 8) each, overwritten), over `rows` rows; the features and blocks of
 * groups first .. end only. */
void gs8_backward(const float *x, const float *dy, float *dx, float *db0, float *db1, int64_t rows,
                  int64_t s, int64_t first, int64_t end, const float *b0, const float *b1) {
    const int64_t n = 64 * s;
    struct group q;
    for (int64_t g = first; g < end; g++) {
        group_blocks(b0, b1, s, g, &q);
        v8 g0[B][B], g1[B][B]; /* g0[r][o]: row o of B0[s r + g]'s gradient; g1 as b1v */
        for (int r = 0; r < B; r++)
            for (int o = 0; o < B; o++) g0[r][o] = g1[r][o] = (v8){0};
        for (int64_t t = 0; t < rows; t++) {
            const float *xt = x + t * n, *dyt = dy + t * n;
            v8 z[B], dz[B], xr[B];
            factor0(xt, s, g, &q, z);
            for (int r = 0; r < B; r++) dz[r] = (v8){0};
            for (int o = 0; o < B; o++) {
                v8 d = load(dyt + B * (s * o + g));
                for (int r = 0; r < B; r++) {
                    g1[o][r] += d * z[r];
                    dz[r] += q.b1v[o][r] * d;
                }
            }
            for (int r = 0; r < B; r++) {
                xr[r] = load(xt + B * (s * r + g));
                for (int o = 0; o < B; o++) g0[r][o] += xr[r] * dz[r][o];
            }
            if (dx) {
                for (int r = 0; r < B; r++) {
                    v8 acc = q.b0n[r][0] * dz[r][0];
                    for (int o = 1; o < B; o++) acc += q.b0n[r][o] * dz[r][o];
                    store(dx + t * n + B * (s * r + g), acc);
                }
            }
        }
        for (int r = 0; r < B; r++)
            for (int o = 0; o < B; o++) store(db0 + (s * r + g) * B * B + o * B, g0[r][o]);
        for (int e = 0; e < B; e++)
            for (int o = 0; o < B; o++)
                for (int r = 0; r < B; r++) db1[(B * g + e) * B * B + o * B + r] = g1[o][r][e];
    }
}

/* Cayley blocks C = (I - S)^{-1} (I + S) of `count` blocks of packed parameters (28 a block:
 * S[i][j] = p, S[j][i] = -p for i < j in row-major order of the upper triangle) into c
 * ((count, 8, 8)). Eight blocks at a time, one per vector lane: Gauss-Jordan elimination of
 * [I - S | I + S] without pivoting, which is stable here because I - S has the identity as its
 * symmetric part (every pivot is at least 1 in exact arithmetic). */
void gs8_cayley(const float *p, float *c, int64_t count) {
    enum { P = B * (B - 1) / 2 };
    for (int64_t b0 = 0; b0 < count; b0 += B) {
        const int lanes = count - b0 < B ? (int)(count - b0) : B;
        v8 a[B][B], x[B][B];
        for (int i = 0; i < B; i++)
            for (int j = 0; j < B; j++) a[i][j] = x[i][j] = (v8){0};
        for (int l = 0; l < lanes; l++) {
            const float *q = p + (b0 + l) * P;
            int t = 0;
            for (int i = 0; i < B; i++) {
                a[i][i][l] = x[i][i][l] = 1.0f;
                for (int j = i + 1; j < B; j++, t++) {
                    a[i][j][l] = -q[t]; /* I - S */
                    a[j][i][l] = q[t];
                    x[i][j][l] = q[t]; /* I + S */
                    x[j][i][l] = -q[t];
                }
            }
        }
        for (int l = lanes; l < B; l++) /* padding lanes: the identity */
            for (int i = 0; i < B; i++) a[i][i][l] = x[i][i][l] = 1.0f;
        for (int k = 0; k < B; k++) {
            const v8 inv = 1.0f / a[k][k];
            for (int j = 0; j < B; j++) {
                a[k][j] *= inv;
                x[k][j] *= inv;
            }
            for (int i = 0; i < B; i++) {
                if (i == k) continue;
                const v8 f = a[i][k];
                for (int j = 0; j < B; j++) {
                    a[i][j] -= f * a[k][j];
                    x[i][j] -= f * x[k][j];
                }
            }
        }
        for (int l = 0; l < lanes; l++)
            for (int i = 0; i < B; i++)
                for (int j = 0; j < B; j++) c[(b0 + l) * B * B + i * B + j] = x[i][j][l];
    }
}
