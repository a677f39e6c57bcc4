// Winograd F(2x2, 3x3) input and output transforms (declared in cpu/launchers.h), vectorized over channels:
// B^T d B and A^T m A are additions only, done on 8 channels at a time with AVX2 (plain loops
// otherwise, which the compiler vectorizes the same way).
#include "cpu/launchers.h"

#include "common/host_device.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dlf::DLF_CPU_NS {

std::vector<int64_t> winograd_tile_bases(int64_t size, int64_t d, int m) {
  std::vector<int64_t> bases;
  const int64_t step = m * std::min(d, size);  // a step >= size ends each class after its first member
  for (int64_t r = 0; r < std::min(d, size); ++r)
    for (int64_t b = r; b < size; b += step) bases.push_back(b);
  return bases;
}

bool all_finite_cpu(const float* x, int64_t n) {
  std::atomic<bool> finite{true};
  at::parallel_for(0, n, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    // x * 0 is 0 for finite x and NaN for inf and NaN: one multiply-add per element, no branch.
    float acc = 0.f;
    int64_t i = begin;
#ifdef __AVX2__
    __m256 v = _mm256_setzero_ps();
    for (; i + 8 <= end; i += 8) v = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps(), v);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, v);
    for (float l : lanes) acc += l;
#endif
    for (; i < end; ++i) acc += x[i] * 0.f;
    if (acc != 0.f) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
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
  static F8 fma(float c, F8 a, F8 b) { return {_mm256_fmadd_ps(_mm256_set1_ps(c), a.v, b.v)}; }  // c * a + b
  static F8 mul(float c, F8 a) { return {_mm256_mul_ps(_mm256_set1_ps(c), a.v)}; }
  // max/min return their second operand when either is NaN: a goes second so NaN propagates (as torch).
  static F8 relu(F8 a) { return {_mm256_max_ps(_mm256_setzero_ps(), a.v)}; }
  static F8 relu6(F8 a) { return {_mm256_min_ps(_mm256_set1_ps(6.f), _mm256_max_ps(_mm256_setzero_ps(), a.v))}; }
};
#endif
struct F1 {
  float v;
  static F1 load(const float* p) { return {*p}; }
  static F1 zero() { return {0.f}; }
  void store(float* p) const { *p = v; }
  friend F1 operator+(F1 a, F1 b) { return {a.v + b.v}; }
  friend F1 operator-(F1 a, F1 b) { return {a.v - b.v}; }
  static F1 fma(float c, F1 a, F1 b) { return {c * a.v + b.v}; }
  static F1 mul(float c, F1 a) { return {c * a.v}; }
  static F1 relu(F1 a) { return {apply_activation(a.v, kActRelu)}; }
  static F1 relu6(F1 a) { return {apply_activation(a.v, kActRelu6)}; }
};

// Transform matrices of F(M x M, 3 x 3) (Lavin & Gray): B^T (A x A) for the input, A^T (M x A) for the
// output, A = M + 2 (interpolation points 0, 1, -1 for M = 2; 0, +-1, +-2 for M = 4).
template <int M>
struct Wino;
template <>
struct Wino<2> {
  static constexpr int A = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};
template <>
struct Wino<4> {
  static constexpr int A = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

// sum_k c[k] * x[k] with the coefficients known at compile time (zeros skipped, +-1 as adds).
template <typename V, int N>
DLF_FORCEINLINE V combine(const float (&c)[N], const V (&x)[N]) {
  V acc = V::zero();
  bool first = true;
#pragma GCC unroll 8
  for (int k = 0; k < N; ++k) {
    if (c[k] == 0.f) continue;
    if (first) {
      acc = c[k] == 1.f ? x[k] : (c[k] == -1.f ? V::zero() - x[k] : V::mul(c[k], x[k]));
      first = false;
    } else if (c[k] == 1.f) {
      acc = acc + x[k];
    } else if (c[k] == -1.f) {
      acc = acc - x[k];
    } else {
      acc = V::fma(c[k], x[k], acc);
    }
  }
  return acc;
}

// One tile, channels [c, c + lanes of V): gather the A x A inputs, V = B^T d B, store its A*A planes.
template <typename V, int M>
DLF_FORCEINLINE void input_tile(const float* const* rows, const bool* col_ok, const int64_t* col_off, int64_t c,
                                float* v, int64_t plane) {
  using W = Wino<M>;
  constexpr int A = W::A;
  V d[A][A];
#pragma GCC unroll 8
  for (int u = 0; u < A; ++u)
#pragma GCC unroll 8
    for (int w = 0; w < A; ++w)
      d[u][w] = (rows[u] != nullptr && col_ok[w]) ? V::load(rows[u] + col_off[w] + c) : V::zero();
  V t[A][A];  // t[u][w] = (B^T d)[u][w], stored column-major in the sense t[w] is one input column
#pragma GCC unroll 8
  for (int w = 0; w < A; ++w) {
    V col[A];
#pragma GCC unroll 8
    for (int k = 0; k < A; ++k) col[k] = d[k][w];
#pragma GCC unroll 8
    for (int u = 0; u < A; ++u) t[u][w] = combine<V, A>(W::BT[u], col);
  }
#pragma GCC unroll 8
  for (int u = 0; u < A; ++u)
#pragma GCC unroll 8
    for (int w = 0; w < A; ++w) combine<V, A>(W::BT[w], t[u]).store(v + (u * A + w) * plane + c);
}

template <typename V, int M>
DLF_FORCEINLINE void output_tile(const float* m, int64_t plane, int64_t c, const float* bias,
                                 const float* const* out_rows, const float* const* res_rows, const bool* col_ok,
                                 const int64_t* col_off, int act) {
  using W = Wino<M>;
  constexpr int A = W::A;
  V r[M][A];  // r = A^T q, row by row
#pragma GCC unroll 8
  for (int w = 0; w < A; ++w) {
    V col[A];
#pragma GCC unroll 8
    for (int k = 0; k < A; ++k) col[k] = V::load(m + (k * A + w) * plane + c);
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) r[i][w] = combine<V, A>(W::AT[i], col);
  }
  const V b = bias != nullptr ? V::load(bias + c) : V::zero();
#pragma GCC unroll 4
  for (int i = 0; i < M; ++i) {
    if (out_rows[i] == nullptr) continue;
#pragma GCC unroll 4
    for (int j = 0; j < M; ++j) {
      if (!col_ok[j]) continue;
      V y = combine<V, A>(W::AT[j], r[i]) + b;
      if (res_rows != nullptr) y = y + V::load(res_rows[i] + col_off[j] + c);
      if (act == 1) y = V::relu(y);
      if (act == 2) y = V::relu6(y);
      y.store(const_cast<float*>(out_rows[i]) + col_off[j] + c);
    }
  }
}

template <int M>
void input_transform(const WinogradParams& p, const float* x, float* v) {
  constexpr int A = M + 2;
  const int64_t T = p.N * p.TH * p.TW, plane = T * p.C, C = p.C, d = p.d;
  at::parallel_for(0, T, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, C)), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t tw = t % p.TW, th = (t / p.TW) % p.TH, n = t / (p.TW * p.TH);
      const float* rows[A];
      bool col_ok[A];
      int64_t col_off[A];
      for (int u = 0; u < A; ++u) {
        const int64_t h = p.tb_h[th] + (u - 1) * d, w = p.tb_w[tw] + (u - 1) * d;
        rows[u] = (h >= 0 && h < p.H) ? x + ((n * p.H + h) * p.W) * C : nullptr;
        col_ok[u] = w >= 0 && w < p.W;
        col_off[u] = w * C;
      }
      float* vt = v + t * C;
      int64_t c = 0;
#ifdef __AVX2__
      for (; c + 8 <= C; c += 8) input_tile<F8, M>(rows, col_ok, col_off, c, vt, plane);
#endif
      for (; c < C; ++c) input_tile<F1, M>(rows, col_ok, col_off, c, vt, plane);
    }
  });
}

template <int M>
void output_transform(const WinogradParams& p, int64_t Cout, const float* m, const float* bias, const float* residual,
                      int act, float* y) {
  const int64_t T = p.N * p.TH * p.TW, plane = T * Cout, d = p.d;
  at::parallel_for(0, T, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, Cout)), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t tw = t % p.TW, th = (t / p.TW) % p.TH, n = t / (p.TW * p.TH);
      const float* out_rows[M];
      const float* res_rows[M];
      bool col_ok[M];
      int64_t col_off[M];
      for (int i = 0; i < M; ++i) {
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
      for (; c + 8 <= Cout; c += 8) output_tile<F8, M>(mt, plane, c, bias, out_rows, rr, col_ok, col_off, act);
#endif
      for (; c < Cout; ++c) output_tile<F1, M>(mt, plane, c, bias, out_rows, rr, col_ok, col_off, act);
    }
  });
}

}  // namespace

void winograd_input_transform_cpu(const WinogradParams& p, const float* x, float* v) {
  if (p.m == 4) return input_transform<4>(p, x, v);
  input_transform<2>(p, x, v);
}

void winograd_output_transform_cpu(const WinogradParams& p, int64_t Cout, const float* m, const float* bias,
                                   const float* residual, int act, float* y) {
  if (p.m == 4) return output_transform<4>(p, Cout, m, bias, residual, act, y);
  output_transform<2>(p, Cout, m, bias, residual, act, y);
}

}  // namespace dlf::DLF_CPU_NS
