// Width-generic SIMD types for the CPU launchers' own vector code (csrc/cpu/*.cpp), one source, three meanings
// chosen by the compiler's flags (vec.h's DLF_HOST_AVX2 / DLF_HOST_AVX512, never the build machine):
//
//  * AVX-512 (the avx512 variant): 16 fp32 lanes in one __m512, masks in __mmask16.
//  * AVX2 (the avx2 variant): 8 lanes in one __m256, masks as all-ones lanes; these are the instructions the
//    launchers used before this header, so their results are bitwise those of before.
//  * Portable (the default variant, any architecture): 16 lanes in plain arrays, each operation written as the
//    x86 instruction defines it lane by lane (max/min's NaN rule, round-to-nearest-even, truncating converts),
//    so the default variant's tests walk the lane and tail logic of the AVX-512 build at its width.
//
//  SimdF     kLanes fp32 lanes: arithmetic, (fused) multiply-adds, compares, selects, permutes, an in-register
//            kLanes x kLanes transpose.
//  SimdI     kLanes int32 lanes: permute indices and class labels.
//  SimdMask  one bool per lane (from SimdF compares).
//  SimdBits  kLanes * 4 raw bytes: block copies that also track the largest magnitude they moved (inf/NaN checks).
//
// Host only (the CUDA kernels and the emulation use vec.h's Vec/Pack).
#pragma once

#include <math.h>

#include <cstdint>
#include <cstring>

#include "common/host_device.h"
#include "common/vec.h"

DLF_BODIES_BEGIN

// Prefetches (__builtin_prefetch is prefetcht1 / prefetchw or prefetcht0 on x86, a no-op where none exists).
DLF_FORCEINLINE void prefetch_l2(const void* p) { __builtin_prefetch(p, 0, 2); }
DLF_FORCEINLINE void prefetch_for_write(const void* p) { __builtin_prefetch(p, 1, 3); }

#if DLF_HOST_AVX512
// ------------------------------------------------------------------------------------------- AVX-512 meaning
struct SimdMask {
  __mmask16 m;
  static DLF_FORCEINLINE SimdMask none() { return {0}; }
  friend DLF_FORCEINLINE SimdMask operator&(SimdMask a, SimdMask b) { return {static_cast<__mmask16>(a.m & b.m)}; }
  friend DLF_FORCEINLINE SimdMask operator|(SimdMask a, SimdMask b) { return {static_cast<__mmask16>(a.m | b.m)}; }
  DLF_FORCEINLINE bool any() const { return m != 0; }
};

struct SimdI {
  static constexpr int kLanes = 16;
  __m512i v;
  static DLF_FORCEINLINE SimdI load(const int32_t* p) { return {_mm512_loadu_si512(p)}; }
};

struct SimdF {
  static constexpr int kLanes = 16;
  __m512 v;
  static DLF_FORCEINLINE SimdF zero() { return {_mm512_setzero_ps()}; }
  static DLF_FORCEINLINE SimdF set1(float x) { return {_mm512_set1_ps(x)}; }
  static DLF_FORCEINLINE SimdF load(const float* p) { return {_mm512_loadu_ps(p)}; }
  DLF_FORCEINLINE void store(float* p) const { _mm512_storeu_ps(p, v); }
  friend DLF_FORCEINLINE SimdF operator+(SimdF a, SimdF b) { return {_mm512_add_ps(a.v, b.v)}; }
  friend DLF_FORCEINLINE SimdF operator-(SimdF a, SimdF b) { return {_mm512_sub_ps(a.v, b.v)}; }
  friend DLF_FORCEINLINE SimdF operator*(SimdF a, SimdF b) { return {_mm512_mul_ps(a.v, b.v)}; }
  static DLF_FORCEINLINE SimdF fma(SimdF a, SimdF b, SimdF c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  static DLF_FORCEINLINE SimdF mul_add(SimdF a, SimdF b, SimdF c) { return fma(a, b, c); }
  static DLF_FORCEINLINE SimdF max(SimdF a, SimdF b) { return {_mm512_max_ps(a.v, b.v)}; }
  static DLF_FORCEINLINE SimdF min(SimdF a, SimdF b) { return {_mm512_min_ps(a.v, b.v)}; }
  static DLF_FORCEINLINE SimdF abs(SimdF a) { return {_mm512_abs_ps(a.v)}; }
  static DLF_FORCEINLINE SimdF round_even(SimdF a) {
    return {_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  static DLF_FORCEINLINE SimdMask gt(SimdF a, SimdF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_GT_OQ)}; }
  static DLF_FORCEINLINE SimdMask not_le(SimdF a, SimdF b) { return {_mm512_cmp_ps_mask(a.v, b.v, _CMP_NLE_UQ)}; }
  static DLF_FORCEINLINE SimdMask ordered(SimdF a) { return {_mm512_cmp_ps_mask(a.v, a.v, _CMP_ORD_Q)}; }
  static DLF_FORCEINLINE SimdF select(SimdMask m, SimdF yes, SimdF no) {
    return {_mm512_mask_blend_ps(m.m, no.v, yes.v)};
  }
  // r[l] = a[idx[l]] over all lanes (vpermps); r[l] = a[4 * (l / 4) + idx[l]] within each group of 4 (vpermilps).
  static DLF_FORCEINLINE SimdF permute(SimdF a, SimdI idx) { return {_mm512_permutexvar_ps(idx.v, a.v)}; }
  static DLF_FORCEINLINE SimdF permute_in_groups(SimdF a, SimdI idx) { return {_mm512_permutevar_ps(a.v, idx.v)}; }
  // Group g of 4 lanes from p[g][0..3].
  static DLF_FORCEINLINE SimdF load_groups(const float* const* p) {
    __m512 r = _mm512_castps128_ps512(_mm_loadu_ps(p[0]));
    r = _mm512_insertf32x4(r, _mm_loadu_ps(p[1]), 1);
    r = _mm512_insertf32x4(r, _mm_loadu_ps(p[2]), 2);
    return {_mm512_insertf32x4(r, _mm_loadu_ps(p[3]), 3)};
  }
  // Integer conversions: truncating, and the current rounding mode (nearest even).
  static DLF_FORCEINLINE void store_trunc(SimdF a, int32_t* p) { _mm512_storeu_si512(p, _mm512_cvttps_epi32(a.v)); }
  static DLF_FORCEINLINE void store_trunc(SimdF a, int64_t* p) {
    const __m512i t = _mm512_cvttps_epi32(a.v);
    _mm512_storeu_si512(p, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(t)));
    _mm512_storeu_si512(p + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(t, 1)));
  }
  // 2^n for integral n in [-126, 127]: the exponent bits built directly.
  static DLF_FORCEINLINE SimdF exp2_int(SimdF n) {
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127)), 23);
    return {_mm512_castsi512_ps(e)};
  }
  float sum() const {
    alignas(64) float l[kLanes];
    _mm512_store_ps(l, v);
    float s = 0.f;
    for (float x : l) s += x;
    return s;
  }
};

struct SimdBits {
  static constexpr int kBytes = 64;
  __m512i v;
  static DLF_FORCEINLINE SimdBits zero() { return {_mm512_setzero_si512()}; }
  static DLF_FORCEINLINE SimdBits load(const void* p) { return {_mm512_loadu_si512(p)}; }
  static DLF_FORCEINLINE SimdBits of(SimdF a) { return {_mm512_castps_si512(a.v)}; }
  DLF_FORCEINLINE void store(void* p) const { _mm512_storeu_si512(p, v); }
  // Lane-wise unsigned maximum of the elements' magnitude bits (sign cleared), elements of E bytes (4 or 2).
  template <int E>
  DLF_FORCEINLINE void max_magnitude(SimdBits x) {
    if constexpr (E == 4) {
      v = _mm512_max_epu32(v, _mm512_and_si512(x.v, _mm512_set1_epi32(0x7fffffff)));
    } else {
      v = _mm512_max_epu16(v, _mm512_and_si512(x.v, _mm512_set1_epi16(0x7fff)));
    }
  }
  // Whether any E-byte lane is at least `bits`.
  template <int E>
  DLF_FORCEINLINE bool any_at_least(uint32_t bits) const {
    if constexpr (E == 4) return _mm512_cmpge_epu32_mask(v, _mm512_set1_epi32(static_cast<int32_t>(bits))) != 0;
    return _mm512_cmpge_epu16_mask(v, _mm512_set1_epi16(static_cast<int16_t>(bits))) != 0;
  }
};

// dst[j * ds + i] = src[i * ss + j] for i, j in [0, 16), with `magnitude` taking the loaded values' magnitudes.
DLF_FORCEINLINE void transpose_block(const float* src, int64_t ss, float* dst, int64_t ds, SimdBits& magnitude) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) {
    r[i] = _mm512_loadu_ps(src + i * ss);
    magnitude.max_magnitude<4>(SimdBits{_mm512_castps_si512(r[i])});
  }
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // Within each 128-bit lane L, r[4g + j] then holds column 4L + j of rows 4g..4g+3.
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  // Output row 4L + j gathers 128-bit lane L of r[j], r[4 + j], r[8 + j], r[12 + j].
  for (int j = 0; j < 4; ++j) {
    const __m512 a_even = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);  // lanes (0, 2) of each
    const __m512 a_odd = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);   // lanes (1, 3)
    const __m512 b_even = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    const __m512 b_odd = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
    _mm512_storeu_ps(dst + (0 + j) * ds, _mm512_shuffle_f32x4(a_even, b_even, 0x88));
    _mm512_storeu_ps(dst + (4 + j) * ds, _mm512_shuffle_f32x4(a_odd, b_odd, 0x88));
    _mm512_storeu_ps(dst + (8 + j) * ds, _mm512_shuffle_f32x4(a_even, b_even, 0xDD));
    _mm512_storeu_ps(dst + (12 + j) * ds, _mm512_shuffle_f32x4(a_odd, b_odd, 0xDD));
  }
}

#elif DLF_HOST_AVX2
// ---------------------------------------------------------------------------------------------- AVX2 meaning
struct SimdMask {
  __m256 m;  // all-ones lanes
  static DLF_FORCEINLINE SimdMask none() { return {_mm256_setzero_ps()}; }
  friend DLF_FORCEINLINE SimdMask operator&(SimdMask a, SimdMask b) { return {_mm256_and_ps(a.m, b.m)}; }
  friend DLF_FORCEINLINE SimdMask operator|(SimdMask a, SimdMask b) { return {_mm256_or_ps(a.m, b.m)}; }
  DLF_FORCEINLINE bool any() const { return _mm256_movemask_ps(m) != 0; }
};

struct SimdI {
  static constexpr int kLanes = 8;
  __m256i v;
  static DLF_FORCEINLINE SimdI load(const int32_t* p) { return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))}; }
};

struct SimdF {
  static constexpr int kLanes = 8;
  __m256 v;
  static DLF_FORCEINLINE SimdF zero() { return {_mm256_setzero_ps()}; }
  static DLF_FORCEINLINE SimdF set1(float x) { return {_mm256_set1_ps(x)}; }
  static DLF_FORCEINLINE SimdF load(const float* p) { return {_mm256_loadu_ps(p)}; }
  DLF_FORCEINLINE void store(float* p) const { _mm256_storeu_ps(p, v); }
  friend DLF_FORCEINLINE SimdF operator+(SimdF a, SimdF b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend DLF_FORCEINLINE SimdF operator-(SimdF a, SimdF b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend DLF_FORCEINLINE SimdF operator*(SimdF a, SimdF b) { return {_mm256_mul_ps(a.v, b.v)}; }
  static DLF_FORCEINLINE SimdF fma(SimdF a, SimdF b, SimdF c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static DLF_FORCEINLINE SimdF mul_add(SimdF a, SimdF b, SimdF c) { return fma(a, b, c); }
  static DLF_FORCEINLINE SimdF max(SimdF a, SimdF b) { return {_mm256_max_ps(a.v, b.v)}; }
  static DLF_FORCEINLINE SimdF min(SimdF a, SimdF b) { return {_mm256_min_ps(a.v, b.v)}; }
  static DLF_FORCEINLINE SimdF abs(SimdF a) {
    return {_mm256_and_ps(a.v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))};
  }
  static DLF_FORCEINLINE SimdF round_even(SimdF a) {
    return {_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  static DLF_FORCEINLINE SimdMask gt(SimdF a, SimdF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)}; }
  static DLF_FORCEINLINE SimdMask not_le(SimdF a, SimdF b) { return {_mm256_cmp_ps(a.v, b.v, _CMP_NLE_UQ)}; }
  static DLF_FORCEINLINE SimdMask ordered(SimdF a) { return {_mm256_cmp_ps(a.v, a.v, _CMP_ORD_Q)}; }
  static DLF_FORCEINLINE SimdF select(SimdMask m, SimdF yes, SimdF no) { return {_mm256_blendv_ps(no.v, yes.v, m.m)}; }
  static DLF_FORCEINLINE SimdF permute(SimdF a, SimdI idx) { return {_mm256_permutevar8x32_ps(a.v, idx.v)}; }
  static DLF_FORCEINLINE SimdF permute_in_groups(SimdF a, SimdI idx) { return {_mm256_permutevar_ps(a.v, idx.v)}; }
  static DLF_FORCEINLINE SimdF load_groups(const float* const* p) {
    return {_mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p[0])), _mm_loadu_ps(p[1]), 1)};
  }
  static DLF_FORCEINLINE void store_trunc(SimdF a, int32_t* p) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_cvttps_epi32(a.v));
  }
  static DLF_FORCEINLINE void store_trunc(SimdF a, int64_t* p) {
    const __m256i t = _mm256_cvttps_epi32(a.v);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(t)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(t, 1)));
  }
  static DLF_FORCEINLINE SimdF exp2_int(SimdF n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127)), 23);
    return {_mm256_castsi256_ps(e)};
  }
  float sum() const {
    alignas(32) float l[kLanes];
    _mm256_store_ps(l, v);
    float s = 0.f;
    for (float x : l) s += x;
    return s;
  }
};

struct SimdBits {
  static constexpr int kBytes = 32;
  __m256i v;
  static DLF_FORCEINLINE SimdBits zero() { return {_mm256_setzero_si256()}; }
  static DLF_FORCEINLINE SimdBits load(const void* p) {
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))};
  }
  static DLF_FORCEINLINE SimdBits of(SimdF a) { return {_mm256_castps_si256(a.v)}; }
  DLF_FORCEINLINE void store(void* p) const { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  template <int E>
  DLF_FORCEINLINE void max_magnitude(SimdBits x) {
    if constexpr (E == 4) {
      v = _mm256_max_epu32(v, _mm256_and_si256(x.v, _mm256_set1_epi32(0x7fffffff)));
    } else {
      v = _mm256_max_epu16(v, _mm256_and_si256(x.v, _mm256_set1_epi16(0x7fff)));
    }
  }
  // max(v, bits) == v exactly where v >= bits (AVX2 has no unsigned compare).
  template <int E>
  DLF_FORCEINLINE bool any_at_least(uint32_t bits) const {
    __m256i at_least;
    if constexpr (E == 4) {
      at_least = _mm256_cmpeq_epi32(_mm256_max_epu32(v, _mm256_set1_epi32(static_cast<int32_t>(bits))), v);
    } else {
      at_least = _mm256_cmpeq_epi16(_mm256_max_epu16(v, _mm256_set1_epi16(static_cast<int16_t>(bits))), v);
    }
    return _mm256_movemask_epi8(at_least) != 0;
  }
};

// dst[j * ds + i] = src[i * ss + j] for i, j in [0, 8): eight 8-float rows transposed in registers.
DLF_FORCEINLINE void transpose_block(const float* src, int64_t ss, float* dst, int64_t ds, SimdBits& magnitude) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) {
    r[i] = _mm256_loadu_ps(src + i * ss);
    magnitude.max_magnitude<4>(SimdBits{_mm256_castps_si256(r[i])});
  }
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    _mm256_storeu_ps(dst + j * ds, _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
    _mm256_storeu_ps(dst + (j + 4) * ds, _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
  }
}

#else
// ------------------------------------------------------------------------------------------ portable meaning
constexpr int kPortableLanes = 16;

struct SimdMask {
  bool m[kPortableLanes];
  static DLF_FORCEINLINE SimdMask none() { return SimdMask{}; }
  friend DLF_FORCEINLINE SimdMask operator&(SimdMask a, SimdMask b) {
    SimdMask r;
    for (int l = 0; l < kPortableLanes; ++l) r.m[l] = a.m[l] && b.m[l];
    return r;
  }
  friend DLF_FORCEINLINE SimdMask operator|(SimdMask a, SimdMask b) {
    SimdMask r;
    for (int l = 0; l < kPortableLanes; ++l) r.m[l] = a.m[l] || b.m[l];
    return r;
  }
  DLF_FORCEINLINE bool any() const {
    bool r = false;
    for (int l = 0; l < kPortableLanes; ++l) r |= m[l];
    return r;
  }
};

struct SimdI {
  static constexpr int kLanes = kPortableLanes;
  int32_t v[kLanes];
  static DLF_FORCEINLINE SimdI load(const int32_t* p) {
    SimdI r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
};

struct SimdF {
  static constexpr int kLanes = kPortableLanes;
  float v[kLanes];

 private:
  template <typename Fn>
  static DLF_FORCEINLINE SimdF map(Fn fn) {
    SimdF r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = fn(l);
    return r;
  }
  template <typename Fn>
  static DLF_FORCEINLINE SimdMask test(Fn fn) {
    SimdMask r;
    for (int l = 0; l < kLanes; ++l) r.m[l] = fn(l);
    return r;
  }

 public:
  static DLF_FORCEINLINE SimdF zero() { return set1(0.f); }
  static DLF_FORCEINLINE SimdF set1(float x) {
    return map([&](int) { return x; });
  }
  static DLF_FORCEINLINE SimdF load(const float* p) {
    SimdF r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  DLF_FORCEINLINE void store(float* p) const { std::memcpy(p, v, sizeof(v)); }
  friend DLF_FORCEINLINE SimdF operator+(SimdF a, SimdF b) {
    return map([&](int l) { return a.v[l] + b.v[l]; });
  }
  friend DLF_FORCEINLINE SimdF operator-(SimdF a, SimdF b) {
    return map([&](int l) { return a.v[l] - b.v[l]; });
  }
  friend DLF_FORCEINLINE SimdF operator*(SimdF a, SimdF b) {
    return map([&](int l) { return a.v[l] * b.v[l]; });
  }
  // fma: fused, as the x86 instruction (fmaf: a libm call where the target has no FMA instruction), for the
  // blends that must round as the shared bodies' fmaf. mul_add: a * b + c however the target does it fastest
  // (fused on AVX2 / AVX-512, a multiply and an add here), for code that only needs the value to tolerance.
  static DLF_FORCEINLINE SimdF fma(SimdF a, SimdF b, SimdF c) {
    return map([&](int l) { return fmaf(a.v[l], b.v[l], c.v[l]); });
  }
  static DLF_FORCEINLINE SimdF mul_add(SimdF a, SimdF b, SimdF c) {
    return map([&](int l) { return a.v[l] * b.v[l] + c.v[l]; });
  }
  // maxps / minps: the second operand when either is NaN (or both are zeros).
  static DLF_FORCEINLINE SimdF max(SimdF a, SimdF b) {
    return map([&](int l) { return a.v[l] > b.v[l] ? a.v[l] : b.v[l]; });
  }
  static DLF_FORCEINLINE SimdF min(SimdF a, SimdF b) {
    return map([&](int l) { return a.v[l] < b.v[l] ? a.v[l] : b.v[l]; });
  }
  static DLF_FORCEINLINE SimdF abs(SimdF a) {
    return map([&](int l) { return fabsf(a.v[l]); });
  }
  // Adding and subtracting 1.5 * 2^23 rounds |x| < 2^22 to an integer, nearest even (the default rounding mode)
  // without a libm call; larger magnitudes are integers already.
  static DLF_FORCEINLINE SimdF round_even(SimdF a) {
    return map([&](int l) {
      const float x = a.v[l];
      return fabsf(x) < 4194304.f ? (x + 12582912.f) - 12582912.f : x;
    });
  }
  static DLF_FORCEINLINE SimdMask gt(SimdF a, SimdF b) {
    return test([&](int l) { return a.v[l] > b.v[l]; });
  }
  static DLF_FORCEINLINE SimdMask not_le(SimdF a, SimdF b) {
    return test([&](int l) { return !(a.v[l] <= b.v[l]); });
  }
  static DLF_FORCEINLINE SimdMask ordered(SimdF a) {
    return test([&](int l) { return a.v[l] == a.v[l]; });
  }
  static DLF_FORCEINLINE SimdF select(SimdMask m, SimdF yes, SimdF no) {
    return map([&](int l) { return m.m[l] ? yes.v[l] : no.v[l]; });
  }
  static DLF_FORCEINLINE SimdF permute(SimdF a, SimdI idx) {
    return map([&](int l) { return a.v[idx.v[l] & (kLanes - 1)]; });
  }
  static DLF_FORCEINLINE SimdF permute_in_groups(SimdF a, SimdI idx) {
    return map([&](int l) { return a.v[(l & ~3) + (idx.v[l] & 3)]; });
  }
  static DLF_FORCEINLINE SimdF load_groups(const float* const* p) {
    return map([&](int l) { return p[l / 4][l % 4]; });
  }
  // cvttps2dq (truncation); the values here are exact small integers.
  static DLF_FORCEINLINE void store_trunc(SimdF a, int32_t* p) {
    for (int l = 0; l < kLanes; ++l) p[l] = static_cast<int32_t>(a.v[l]);
  }
  static DLF_FORCEINLINE void store_trunc(SimdF a, int64_t* p) {
    for (int l = 0; l < kLanes; ++l) p[l] = static_cast<int32_t>(a.v[l]);
  }
  static DLF_FORCEINLINE SimdF exp2_int(SimdF n) {
    return map([&](int l) {
      const uint32_t e = static_cast<uint32_t>(static_cast<int32_t>(n.v[l]) + 127) << 23;
      float r;
      std::memcpy(&r, &e, sizeof(r));
      return r;
    });
  }
  float sum() const {
    float s = 0.f;
    for (float x : v) s += x;
    return s;
  }
};

struct SimdBits {
  static constexpr int kBytes = 4 * kPortableLanes;
  uint32_t v[kPortableLanes];
  static DLF_FORCEINLINE SimdBits zero() { return SimdBits{}; }
  static DLF_FORCEINLINE SimdBits load(const void* p) {
    SimdBits r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static DLF_FORCEINLINE SimdBits of(SimdF a) {
    SimdBits r;
    std::memcpy(r.v, a.v, sizeof(r.v));
    return r;
  }
  DLF_FORCEINLINE void store(void* p) const { std::memcpy(p, v, sizeof(v)); }
  template <int E>
  DLF_FORCEINLINE void max_magnitude(SimdBits x) {
    for (int l = 0; l < kPortableLanes; ++l) {
      if constexpr (E == 4) {
        const uint32_t m = x.v[l] & 0x7fffffffu;
        v[l] = v[l] > m ? v[l] : m;
      } else {  // two 16-bit elements per word, each its own lane
        const uint32_t lo = x.v[l] & 0x7fffu, hi = x.v[l] & 0x7fff0000u;
        const uint32_t vlo = v[l] & 0xffffu, vhi = v[l] & 0xffff0000u;
        v[l] = (vhi > hi ? vhi : hi) | (vlo > lo ? vlo : lo);
      }
    }
  }
  template <int E>
  DLF_FORCEINLINE bool any_at_least(uint32_t bits) const {
    bool r = false;
    for (int l = 0; l < kPortableLanes; ++l) {
      if constexpr (E == 4) {
        r |= v[l] >= bits;
      } else {
        r |= (v[l] & 0xffffu) >= bits || (v[l] >> 16) >= bits;
      }
    }
    return r;
  }
};

DLF_FORCEINLINE void transpose_block(const float* src, int64_t ss, float* dst, int64_t ds, SimdBits& magnitude) {
  for (int i = 0; i < kPortableLanes; ++i) {
    const SimdF row = SimdF::load(src + i * ss);
    magnitude.max_magnitude<4>(SimdBits::of(row));
    for (int j = 0; j < kPortableLanes; ++j) dst[j * ds + i] = row.v[j];
  }
}
#endif

DLF_BODIES_END
