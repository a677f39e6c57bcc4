// Packs of V lanes used by the shared kernel bodies: one source, four meanings.
//
//  * Plain C++ (any host, any V): a fixed-length array and loops over it (the compiler vectorizes what
//    its flags allow). The portable CPU variant (no ISA flags) runs the bodies at the AVX-512 widths
//    (HostLanes below), so every lane-width and tail path of the AVX-512 build runs on every machine.
//  * Host with AVX2 (the avx2 CPU variant: -mavx2 -mfma -mf16c): Pack<float, 8> is one __m256 and its
//    helpers are intrinsics, so an NHWC body vectorizes 8 channels per instruction.
//  * Host with AVX-512 F/BW/VL/DQ (the avx512 CPU variant): Pack<float, 16> is one __m512, 16 channels per
//    instruction, with the AVX2 pack's rounding and NaN rules bit for bit (same lane-wise operations).
//  * CUDA device: loads and stores of V * sizeof(T) == 8 or 16 bytes go through an aligned Vec<T, V>
//    (one LDG.64/.128 per pack); the launcher guarantees the alignment before it picks V > 1.
//
// The body never needs to know which meaning it got.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>
#include <type_traits>

#include "common/host_device.h"
#include "common/memory.h"

#if defined(__AVX2__) && defined(__FMA__) && !DLF_DEVICE_CODE && !defined(__CUDACC__)
#define DLF_HOST_AVX2 1
#include <immintrin.h>
#else
#define DLF_HOST_AVX2 0
#endif

// Keyed on the compiler's macros (what the flags of this translation unit allow), never on the build machine.
#if DLF_HOST_AVX2 && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define DLF_HOST_AVX512 1
#else
#define DLF_HOST_AVX512 0
#endif

DLF_BODIES_BEGIN

// Accumulation type of a storage type: fp32 for every float type except float64, which keeps float64
// (gradcheck needs it).
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

// Plain packs on the host are GCC/clang vector-extension values (any architecture: the compiler lowers them to
// whatever registers the flags allow), so whole-pack arithmetic is one statement that stays one value through
// the optimizer; lanes are still indexable (v[l]). As arrays of 16 lanes, the paired walk of the portable
// variant took minutes to compile (scalarized, then re-vectorized). Device code keeps plain arrays.
#if !DLF_DEVICE_CODE && !defined(__CUDACC__)
#define DLF_HOST_VECTOR_PACKS 1
#else
#define DLF_HOST_VECTOR_PACKS 0
#endif

#if DLF_HOST_VECTOR_PACKS
// d[l] = s[l] for l in [0, V). Without F16C an fp16 conversion is a long integer sequence: kept out of line, as
// inlined into every load of the unrolled walks it made the portable variant compile for minutes.
template <typename D, typename S, int V>
__attribute__((noinline)) void convert_lanes_outlined(D* d, const S* s) {
  for (int l = 0; l < V; ++l) d[l] = static_cast<D>(s[l]);
}
template <typename D, typename S, int V>
DLF_FORCEINLINE void convert_lanes(D* d, const S* s) {
#if !defined(__F16C__)
  if constexpr (std::is_same_v<D, c10::Half> || std::is_same_v<S, c10::Half>) {
    convert_lanes_outlined<D, S, V>(d, s);
    return;
  }
#endif
  for (int l = 0; l < V; ++l) d[l] = static_cast<D>(s[l]);
}
#endif

template <typename A, int V>
struct Pack {
#if DLF_HOST_VECTOR_PACKS
  typedef A lanes_t __attribute__((vector_size(sizeof(A) * V)));
  lanes_t v;
#else
  A v[V];
#endif
};

#if DLF_HOST_AVX2
template <>
struct Pack<float, 8> {
  __m256 v;
};
#endif
#if DLF_HOST_AVX512
template <>
struct Pack<float, 16> {
  __m512 v;
};
#endif

// Pack operations, specialized per (storage, accumulator, width). The generic one is the plain meaning.
template <typename T, typename A, int V>
struct PackOps {
  using P = Pack<A, V>;
#if DLF_HOST_VECTOR_PACKS
  // Host: lanes converted to A in a plain array, then moved into the vector value whole.
  template <typename S>
  static DLF_FORCEINLINE P load_lanes(const S* p) {
    P r;
    if constexpr (std::is_same_v<S, A>) {
      std::memcpy(&r.v, p, sizeof(r.v));
    } else {
      A lanes[V];
      convert_lanes<A, S, V>(lanes, p);
      std::memcpy(&r.v, lanes, sizeof(r.v));
    }
    return r;
  }
#endif
  // One 8- or 16-byte access per pack on the GPU (the launcher checks the alignment).
  static constexpr bool kVectorIO = V > 1 && (sizeof(T) * V == 8 || sizeof(T) * V == 16);
  static DLF_HOST_DEVICE DLF_FORCEINLINE P zero() {
#if DLF_HOST_VECTOR_PACKS
    return P{};
#else
    P r;
    DLF_UNROLL
    for (int l = 0; l < V; ++l) r.v[l] = A(0);
    return r;
#endif
  }
  // Weights, scale and shift are stored in the accumulation type.
  static DLF_HOST_DEVICE DLF_FORCEINLINE P load_acc(const A* p) {
#if DLF_HOST_VECTOR_PACKS
    return load_lanes(p);
#else
    P r;
    DLF_UNROLL
    for (int l = 0; l < V; ++l) r.v[l] = load_global(p + l);
    return r;
#endif
  }
  static DLF_HOST_DEVICE DLF_FORCEINLINE P load(const T* p) {
#if DLF_HOST_VECTOR_PACKS
    return load_lanes(p);
#else
    P r;
#if DLF_DEVICE_CODE
    if constexpr (kVectorIO) {
      const Vec<T, V> raw = load_global(reinterpret_cast<const Vec<T, V>*>(p));
      DLF_UNROLL
      for (int l = 0; l < V; ++l) r.v[l] = static_cast<A>(raw.v[l]);
    } else
#endif
    {
      DLF_UNROLL
      for (int l = 0; l < V; ++l) r.v[l] = static_cast<A>(load_global(p + l));
    }
    return r;
#endif
  }
  static DLF_HOST_DEVICE DLF_FORCEINLINE void store(T* p, const P& a) {
#if DLF_HOST_VECTOR_PACKS
    if constexpr (std::is_same_v<T, A>) {
      std::memcpy(p, &a.v, sizeof(a.v));
    } else {
      A lanes[V];
      std::memcpy(lanes, &a.v, sizeof(a.v));
      convert_lanes<T, A, V>(p, lanes);
    }
#else
#if DLF_DEVICE_CODE
    if constexpr (kVectorIO) {
      Vec<T, V> raw;
      DLF_UNROLL
      for (int l = 0; l < V; ++l) raw.v[l] = static_cast<T>(a.v[l]);
      store_global(reinterpret_cast<Vec<T, V>*>(p), raw);
    } else
#endif
    {
      DLF_UNROLL
      for (int l = 0; l < V; ++l) store_global(p + l, static_cast<T>(a.v[l]));
    }
#endif
  }
  // acc += x * w
  static DLF_HOST_DEVICE DLF_FORCEINLINE void fma(P& acc, const P& x, const P& w) {
#if DLF_HOST_VECTOR_PACKS
    acc.v += x.v * w.v;
#else
    DLF_UNROLL
    for (int l = 0; l < V; ++l) acc.v[l] += x.v[l] * w.v[l];
#endif
  }
  // act(acc * s + b)
  static DLF_HOST_DEVICE DLF_FORCEINLINE P epilogue(const P& acc, const P& s, const P& b, int act) {
#if DLF_HOST_VECTOR_PACKS
    // apply_activation lane-wise: a NaN fails both compares and passes through.
    typename P::lanes_t r = acc.v * s.v + b.v;
    const typename P::lanes_t zeros{}, sixes = zeros + A(6);
    if (act != kActNone) r = r < A(0) ? zeros : r;
    if (act == kActRelu6) r = r > A(6) ? sixes : r;
    return P{r};
#else
    P r;
    DLF_UNROLL
    for (int l = 0; l < V; ++l) r.v[l] = apply_activation(acc.v[l] * s.v[l] + b.v[l], act);
    return r;
#endif
  }
};

#if DLF_HOST_AVX2
// fp32 lanes in one __m256; the storage-specific part is only load/store.
struct AvxF32 {
  using P = Pack<float, 8>;
  static DLF_FORCEINLINE P zero() { return P{_mm256_setzero_ps()}; }
  static DLF_FORCEINLINE P load_acc(const float* p) { return P{_mm256_loadu_ps(p)}; }
  static DLF_FORCEINLINE void fma(P& acc, const P& x, const P& w) { acc.v = _mm256_fmadd_ps(x.v, w.v, acc.v); }
  // max_ps / min_ps return their second operand when either is NaN: with the activation's bound first, a NaN
  // passes through as F.relu / F.relu6 let it (the bound second would turn NaN into 0 or 6).
  static DLF_FORCEINLINE P epilogue(const P& acc, const P& s, const P& b, int act) {
    __m256 r = _mm256_fmadd_ps(acc.v, s.v, b.v);
    if (act != kActNone) r = _mm256_max_ps(_mm256_setzero_ps(), r);
    if (act == kActRelu6) r = _mm256_min_ps(_mm256_set1_ps(6.f), r);
    return P{r};
  }
};

template <>
struct PackOps<float, float, 8> : AvxF32 {
  static DLF_FORCEINLINE P load(const float* p) { return P{_mm256_loadu_ps(p)}; }
  static DLF_FORCEINLINE void store(float* p, const P& a) { _mm256_storeu_ps(p, a.v); }
};

template <>
struct PackOps<c10::BFloat16, float, 8> : AvxF32 {
  // bf16 is the upper half of an fp32: widen and shift.
  static DLF_FORCEINLINE P load(const c10::BFloat16* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return P{_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))};
  }
  // Round to nearest even like c10::BFloat16(float); NaN becomes the canonical 0x7fc0.
  static DLF_FORCEINLINE void store(c10::BFloat16* p, const P& a) {
    const __m256i u = _mm256_castps_si256(a.v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
};

template <>
struct PackOps<c10::Half, float, 8> : AvxF32 {
  static DLF_FORCEINLINE P load(const c10::Half* p) {
    return P{_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
  }
  static DLF_FORCEINLINE void store(c10::Half* p, const P& a) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT));
  }
};
#endif

#if DLF_HOST_AVX512
// fp32 lanes in one __m512: the operations of AvxF32, lane for lane (vfmadd, and vmaxps / vminps with the
// activation's bound first, whose EVEX forms return the second operand on NaN exactly as the VEX ones do).
struct Avx512F32 {
  using P = Pack<float, 16>;
  static DLF_FORCEINLINE P zero() { return P{_mm512_setzero_ps()}; }
  static DLF_FORCEINLINE P load_acc(const float* p) { return P{_mm512_loadu_ps(p)}; }
  static DLF_FORCEINLINE void fma(P& acc, const P& x, const P& w) { acc.v = _mm512_fmadd_ps(x.v, w.v, acc.v); }
  static DLF_FORCEINLINE P epilogue(const P& acc, const P& s, const P& b, int act) {
    __m512 r = _mm512_fmadd_ps(acc.v, s.v, b.v);
    if (act != kActNone) r = _mm512_max_ps(_mm512_setzero_ps(), r);
    if (act == kActRelu6) r = _mm512_min_ps(_mm512_set1_ps(6.f), r);
    return P{r};
  }
};

template <>
struct PackOps<float, float, 16> : Avx512F32 {
  static DLF_FORCEINLINE P load(const float* p) { return P{_mm512_loadu_ps(p)}; }
  static DLF_FORCEINLINE void store(float* p, const P& a) { _mm512_storeu_ps(p, a.v); }
};

template <>
struct PackOps<c10::BFloat16, float, 16> : Avx512F32 {
  static DLF_FORCEINLINE P load(const c10::BFloat16* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return P{_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))};
  }
  // The AVX2 store's integer rounding (nearest even, NaN -> 0x7fc0); every lane then fits 16 bits, so the
  // truncating vpmovdw narrows exactly as the AVX2 unsigned-saturating pack does.
  static DLF_FORCEINLINE void store(c10::BFloat16* p, const P& a) {
    const __m512i u = _mm512_castps_si512(a.v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
    r = _mm512_mask_blend_epi32(nan, r, _mm512_set1_epi32(0x7fc0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
};

template <>
struct PackOps<c10::Half, float, 16> : Avx512F32 {
  static DLF_FORCEINLINE P load(const c10::Half* p) {
    return P{_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
  }
  static DLF_FORCEINLINE void store(c10::Half* p, const P& a) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT));
  }
};
#endif

// Widest pack each launcher uses for a storage type. On the host: one register of the variant's widest ISA
// (16 fp32 / 8 fp64 lanes with AVX-512, 8 / 4 with AVX2), and the AVX-512 widths in the portable variant, whose
// plain arrays then run the very lane and tail logic of the AVX-512 build (testable on any machine); 16 bytes
// on the GPU.
template <typename T>
struct HostLanes {
#if DLF_HOST_AVX2 && !DLF_HOST_AVX512
  static constexpr int value = sizeof(acc_t<T>) == 4 ? 8 : 4;
#else
  static constexpr int value = sizeof(acc_t<T>) == 4 ? 16 : 8;
#endif
};
template <typename T>
struct DeviceLanes {
  static constexpr int value = static_cast<int>(16 / sizeof(T));
};

DLF_BODIES_END
