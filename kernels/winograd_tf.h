/* kernels-private: the Winograd transforms of kernels/winograd.c on 16
 * lanes at a time (GCC vector types: one zmm, two ymm or four xmm). This
 * file is included once per instruction set with WT(name) naming that
 * set's copy and a `#pragma GCC target` around it; it has no include guard
 * on purpose.
 *
 * The 1-D transforms are the rows of Lavin & Gray's matrices ("Fast
 * Algorithms for Convolutional Neural Networks", 2015) written out, zeros
 * dropped:
 *   F(2,3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *           G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *           A^T = [1 1 1 0; 0 1 -1 -1]
 *   F(4,3): B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *                  0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *           G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
 *                  1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *           A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * (kn_winograd_ref in kernels/winograd.c multiplies the same matrices in
 * plain loops). Each 2-D transform is the 1-D one down the columns, then
 * along the rows. */

/* o[i*so] = (B^T d)[i] for d[j*sd], j < alpha */
static inline void WT(bt)(int m, wv *o, int so, const wv *d, int sd)
{
    if (m == 2) {
        wv d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd];
        o[0] = d0 - d2;
        o[so] = d1 + d2;
        o[2 * so] = d2 - d1;
        o[3 * so] = d1 - d3;
        return;
    }
    wv d0 = d[0], d1 = d[sd], d2 = d[2 * sd], d3 = d[3 * sd], d4 = d[4 * sd], d5 = d[5 * sd];
    wv t0 = d4 - 4 * d2, t1 = d3 - 4 * d1, t2 = d4 - d2, t3 = 2 * (d3 - d1);
    o[0] = 4 * d0 - 5 * d2 + d4;
    o[so] = t0 + t1;
    o[2 * so] = t0 - t1;
    o[3 * so] = t2 + t3;
    o[4 * so] = t2 - t3;
    o[5 * so] = 4 * d1 - 5 * d3 + d5;
}

/* o[i*so] = (G g)[i] for g[j*sg], j < 3 */
static inline void WT(gt)(int m, wv *o, int so, const wv *g, int sg)
{
    wv g0 = g[0], g1 = g[sg], g2 = g[2 * sg];
    if (m == 2) {
        o[0] = g0;
        o[so] = 0.5f * (g0 + g1 + g2);
        o[2 * so] = 0.5f * (g0 - g1 + g2);
        o[3 * so] = g2;
        return;
    }
    wv e = g0 + g2, q = g0 * (1.0f / 24) + g2 * (1.0f / 6);
    o[0] = g0 * 0.25f;
    o[so] = (e + g1) * (-1.0f / 6);
    o[2 * so] = (e - g1) * (-1.0f / 6);
    o[3 * so] = q + g1 * (1.0f / 12);
    o[4 * so] = q - g1 * (1.0f / 12);
    o[5 * so] = g2;
}

/* o[i*so] = (A^T v)[i] for v[j*sv], j < alpha */
static inline void WT(at)(int m, wv *o, int so, const wv *v, int sv)
{
    if (m == 2) {
        o[0] = v[0] + v[sv] + v[2 * sv];
        o[so] = v[sv] - v[2 * sv] - v[3 * sv];
        return;
    }
    wv a = v[sv] + v[2 * sv], b = v[sv] - v[2 * sv], c = v[3 * sv] + v[4 * sv], d = v[3 * sv] - v[4 * sv];
    o[0] = v[0] + a + c;
    o[so] = b + 2 * d;
    o[2 * so] = a + 4 * c;
    o[3 * so] = b + 8 * d + v[5 * sv];
}

/* V[p][ci][lane] = (B^T d B)[p] of the tiles' input patches d[alpha][alpha]
 * (lane-major), for one channel: p = row * alpha + column. */
static void WT(input_tf)(int m, const wv *d, float *v, size_t p_stride)
{
    int a = m + 2;
    wv t[36], u[36];
    for (int c = 0; c < a; c++) WT(bt)(m, t + c, a, d + c, a); /* down the columns */
    for (int r = 0; r < a; r++) WT(bt)(m, u + r * a, 1, t + r * a, 1); /* along the rows */
    for (int p = 0; p < a * a; p++) memcpy(v + p * p_stride, &u[p], sizeof(wv));
}

/* U[p] = (G g G^T)[p] for 16 kernels g[3][3] (lane-major). */
static void WT(weight_tf)(int m, const wv *g, float *u, size_t p_stride)
{
    int a = m + 2;
    wv t[18], o[36];
    for (int c = 0; c < 3; c++) WT(gt)(m, t + c, 3, g + c, 3);        /* G g: [a][3] */
    for (int r = 0; r < a; r++) WT(gt)(m, o + r * a, 1, t + r * 3, 1); /* (G g) G^T: [a][a] */
    for (int p = 0; p < a * a; p++) memcpy(u + p * p_stride, &o[p], sizeof(wv));
}

/* y[m][m] (lane-major) = A^T M A + bias for the products M[p] read from
 * mp + p * p_stride. */
static void WT(output_tf)(int m, const float *mp, size_t p_stride, float bias, wv *y)
{
    int a = m + 2;
    wv v[36], t[24];
    for (int p = 0; p < a * a; p++) memcpy(&v[p], mp + p * p_stride, sizeof(wv));
    for (int c = 0; c < a; c++) WT(at)(m, t + c, a, v + c, a); /* [m][a] */
    for (int r = 0; r < m; r++) {
        WT(at)(m, y + r * m, 1, t + r * a, 1);
        for (int c = 0; c < m; c++) y[r * m + c] += bias;
    }
}

static const wino_tf WT(wino_tf) = {WT(input_tf), WT(weight_tf), WT(output_tf)};
