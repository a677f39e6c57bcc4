// Winograd F(2x2, 3x3) input and output transforms (see winograd_cpu.h), vectorized over channels:
// B^T d B and A^T m A are additions only, done on 8 channels at a time with AVX2 (plain loops
// otherwise, which the compiler vectorizes the same way).
#include "cpu/winograd_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dlf {

std::vector<int64_t> winograd_tile_bases(int64_t size, int64_t d) {
  std::vector<int64_t> bases;
  for (int64_t r = 0; r < std::min(d, size); ++r)
    for (int64_t b = r; b < size; b += 2 * d) bases.push_back(b);
  return bases;
}

namespace {

// 8 floats (one AVX2 register) or a scalar, with the few operations the transforms need.
#ifdef __AVX2__
struct F8 {
  __m256 v;
  static F8 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static F8 zero() { return {_mm256_setzero_ps()}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  friend F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
  static F8 relu(F8 a) { return {_mm256_max_ps(a.v, _mm256_setzero_ps())}; }
  static F8 relu6(F8 a) { return {_mm256_min_ps(_mm256_max_ps(a.v, _mm256_setzero_ps()), _mm256_set1_ps(6.f))}; }
};
#endif
struct F1 {
  float v;
  static F1 load(const float* p) { return {*p}; }
  static F1 zero() { return {0.f}; }
  void store(float* p) const { *p = v; }
  friend F1 operator+(F1 a, F1 b) { return {a.v + b.v}; }
  friend F1 operator-(F1 a, F1 b) { return {a.v - b.v}; }
  static F1 relu(F1 a) { return {a.v > 0.f ? a.v : 0.f}; }
  static F1 relu6(F1 a) { return {a.v > 0.f ? (a.v < 6.f ? a.v : 6.f) : 0.f}; }
};

// One tile, channels [c, c + lanes of V): gather the 4x4 inputs, V = B^T d B, store its 16 planes.
template <typename V>
inline void input_tile(const float* const* rows, const bool* col_ok, const int64_t* col_off, int64_t c,
                       float* v, int64_t plane) {
  V d[4][4];
  for (int u = 0; u < 4; ++u)
    for (int w = 0; w < 4; ++w) d[u][w] = (rows[u] != nullptr && col_ok[w]) ? V::load(rows[u] + col_off[w] + c) : V::zero();
  // B^T along the rows: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
  V t[4][4];
  for (int w = 0; w < 4; ++w) {
    t[0][w] = d[0][w] - d[2][w];
    t[1][w] = d[1][w] + d[2][w];
    t[2][w] = d[2][w] - d[1][w];
    t[3][w] = d[1][w] - d[3][w];
  }
  // ... and along the columns
  for (int u = 0; u < 4; ++u) {
    (t[u][0] - t[u][2]).store(v + (u * 4 + 0) * plane + c);
    (t[u][1] + t[u][2]).store(v + (u * 4 + 1) * plane + c);
    (t[u][2] - t[u][1]).store(v + (u * 4 + 2) * plane + c);
    (t[u][1] - t[u][3]).store(v + (u * 4 + 3) * plane + c);
  }
}

template <typename V>
inline void output_tile(const float* m, int64_t plane, int64_t c, const float* bias, const float* const* out_rows,
                        const float* const* res_rows, const bool* col_ok, const int64_t* col_off, int act) {
  V q[4][4];
  for (int u = 0; u < 4; ++u)
    for (int w = 0; w < 4; ++w) q[u][w] = V::load(m + (u * 4 + w) * plane + c);
  // A^T along the rows: (m0 + m1 + m2, m1 - m2 - m3), then along the columns
  V r[2][4];
  for (int w = 0; w < 4; ++w) {
    r[0][w] = q[0][w] + q[1][w] + q[2][w];
    r[1][w] = q[1][w] - q[2][w] - q[3][w];
  }
  const V b = bias != nullptr ? V::load(bias + c) : V::zero();
  for (int i = 0; i < 2; ++i) {
    if (out_rows[i] == nullptr) continue;
    const V o[2] = {r[i][0] + r[i][1] + r[i][2] + b, r[i][1] - r[i][2] - r[i][3] + b};
    for (int j = 0; j < 2; ++j) {
      if (!col_ok[j]) continue;
      V y = o[j];
      if (res_rows != nullptr) y = y + V::load(res_rows[i] + col_off[j] + c);
      if (act == 1) y = V::relu(y);
      if (act == 2) y = V::relu6(y);
      y.store(const_cast<float*>(out_rows[i]) + col_off[j] + c);
    }
  }
}

}  // namespace

void winograd_input_transform_cpu(const WinogradParams& p, const float* x, float* v) {
  const int64_t T = p.N * p.TH * p.TW, plane = T * p.C, C = p.C, d = p.d;
  at::parallel_for(0, T, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, C)), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t tw = t % p.TW, th = (t / p.TW) % p.TH, n = t / (p.TW * p.TH);
      const float* rows[4];
      bool col_ok[4];
      int64_t col_off[4];
      for (int u = 0; u < 4; ++u) {
        const int64_t h = p.tb_h[th] + (u - 1) * d, w = p.tb_w[tw] + (u - 1) * d;
        rows[u] = (h >= 0 && h < p.H) ? x + ((n * p.H + h) * p.W) * C : nullptr;
        col_ok[u] = w >= 0 && w < p.W;
        col_off[u] = w * C;
      }
      float* vt = v + t * C;
      int64_t c = 0;
#ifdef __AVX2__
      for (; c + 8 <= C; c += 8) input_tile<F8>(rows, col_ok, col_off, c, vt, plane);
#endif
      for (; c < C; ++c) input_tile<F1>(rows, col_ok, col_off, c, vt, plane);
    }
  });
}

void winograd_output_transform_cpu(const WinogradParams& p, int64_t Cout, const float* m, const float* bias,
                                   const float* residual, int act, float* y) {
  const int64_t T = p.N * p.TH * p.TW, plane = T * Cout, d = p.d;
  at::parallel_for(0, T, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, Cout)), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t tw = t % p.TW, th = (t / p.TW) % p.TH, n = t / (p.TW * p.TH);
      const float* out_rows[2];
      const float* res_rows[2];
      bool col_ok[2];
      int64_t col_off[2];
      for (int i = 0; i < 2; ++i) {
        const int64_t h = p.tb_h[th] + i * d, w = p.tb_w[tw] + i * d;
        const int64_t off = ((n * p.H + h) * p.W) * Cout;
        out_rows[i] = h < p.H ? y + off : nullptr;
        res_rows[i] = (h < p.H && residual != nullptr) ? residual + off : nullptr;
        col_ok[i] = w < p.W;
        col_off[i] = w * Cout;
      }
      const float* const* rr = residual != nullptr ? res_rows : nullptr;
      const float* mt = m + t * Cout;
      int64_t c = 0;
#ifdef __AVX2__
      for (; c + 8 <= Cout; c += 8) output_tile<F8>(mt, plane, c, bias, out_rows, rr, col_ok, col_off, act);
#endif
      for (; c < Cout; ++c) output_tile<F1>(mt, plane, c, bias, out_rows, rr, col_ok, col_off, act);
    }
  });
}

}  // namespace dlf
