// AVX-512 row kernels of the CPU masked_conv3d, chosen at run time (declarations and contract in simd.h).
#include "simd.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define COMBCN_HAVE_AVX512_KERNELS 1
#include <immintrin.h>
#define COMBCN_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#else
#define COMBCN_HAVE_AVX512_KERNELS 0
#endif

namespace combcn::ops::simd {
namespace {

bool cpu_has_avx512() {
#if COMBCN_HAVE_AVX512_KERNELS
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

std::atomic<int> g_enabled{-1};  // -1: not yet read from COMBCN_CPU_SIMD

bool use_avx512() {
  static const bool supported = cpu_has_avx512();
  int enabled = g_enabled.load(std::memory_order_relaxed);
  if (enabled < 0) {
    const char* env = std::getenv("COMBCN_CPU_SIMD");
    enabled = (env != nullptr && std::strcmp(env, "0") == 0) ? 0 : 1;
    g_enabled.store(enabled);
  }
  return supported && enabled == 1;
}

#if COMBCN_HAVE_AVX512_KERNELS

// 16 lanes in, 16 lanes out; `k` masks the tail of a row (C not a multiple of 16).
COMBCN_AVX512 inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }

COMBCN_AVX512 inline __m512 load16(const uint16_t* p, __mmask16 k) {
  const __m256i bits = _mm256_maskz_loadu_epi16(k, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

COMBCN_AVX512 inline void store16(float* p, __m512 v, __mmask16 k) { _mm512_mask_storeu_ps(p, k, v); }

// float -> bf16, round to nearest even, NaN -> 0x7FC0: c10::BFloat16's rounding, lane by lane. The 16
// high halves are gathered by a word permute and stored as 256 bits: the down-converting store (vpmovdw to
// memory) measured 3x slower on this AMD EPYC.
COMBCN_AVX512 inline void store16(uint16_t* p, __m512 v, __mmask16 k) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC00000));
  const __m512i high = _mm512_set_epi16(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1,  //
                                        31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m256i h = _mm512_castsi512_si256(_mm512_permutexvar_epi16(high, r));
  if (k == static_cast<__mmask16>(0xFFFF)) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
  } else {
    _mm256_mask_storeu_epi16(p, k, h);
  }
}

COMBCN_AVX512 inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Whether every m[v] is exactly +0 or 1 (the network's masks are), compared as bits: x * -0 would flip
// the sign of a zero where x * +0 keeps it.
COMBCN_AVX512 inline bool all_binary(const float* m, int64_t nvox) {
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(0x3F800000);
  for (int64_t v = 0; v < nvox; v += 16) {
    const __mmask16 k = tail_mask(nvox - v);
    const __m512i bits = _mm512_maskz_loadu_epi32(k, m + v);
    const __mmask16 ok = _mm512_cmpeq_epi32_mask(bits, zero) | _mm512_cmpeq_epi32_mask(bits, one);
    if ((ok & k) != k) return false;
  }
  return true;
}

// bf16 times a binary mask needs no arithmetic: x * 1 is x and x * 0 is a zero of x's sign, except that a
// NaN (or an infinity times 0) becomes the canonical 0x7FC0, as the float round trip gives. Branch-free in
// the mask value, so that a random mask costs no misprediction per voxel. Per voxel: keep every bit
// (mask 1) or the sign only (mask 0); NaN above inf (mask 1) or from inf up (mask 0).
COMBCN_AVX512 inline __m512i binary_keep(int one) {
  return _mm512_set1_epi16(static_cast<int16_t>(0x8000 | (-one & 0x7FFF)));
}
COMBCN_AVX512 inline __m512i binary_limit(int one) { return _mm512_set1_epi16(static_cast<int16_t>(0x7F7F + one)); }
COMBCN_AVX512 inline __m512i binary_apply(__m512i bits, __m512i keep, __m512i limit) {
  const __mmask32 nan = _mm512_cmpgt_epu16_mask(_mm512_and_si512(bits, _mm512_set1_epi16(0x7FFF)), limit);
  return _mm512_mask_mov_epi16(_mm512_and_si512(bits, keep), nan, _mm512_set1_epi16(0x7FC0));
}

COMBCN_AVX512 void mask_multiply_binary_bf16(const uint16_t* x, uint16_t* out, const float* m, int64_t nvox,
                                             int64_t C) {
  int64_t v = 0;
  if (C == 16) {  // two voxels per 512-bit vector
    for (; v + 1 < nvox; v += 2) {
      const int a = static_cast<int>(m[v] == 1.0f), b = static_cast<int>(m[v + 1] == 1.0f);
      const __m512i keep = _mm512_mask_blend_epi16(0xFFFF0000u, binary_keep(a), binary_keep(b));
      const __m512i limit = _mm512_mask_blend_epi16(0xFFFF0000u, binary_limit(a), binary_limit(b));
      const __m512i bits = _mm512_loadu_si512(x + v * 16);
      _mm512_storeu_si512(out + v * 16, binary_apply(bits, keep, limit));
    }
  }
  for (; v < nvox; ++v) {
    const int one = static_cast<int>(m[v] == 1.0f);
    const __m512i keep = binary_keep(one);
    const __m512i limit = binary_limit(one);
    const uint16_t* xr = x + v * C;
    uint16_t* orow = out + v * C;
    for (int64_t c = 0; c < C; c += 32) {
      const __mmask32 k = C - c >= 32 ? 0xFFFFFFFFu : static_cast<__mmask32>((1u << (C - c)) - 1u);
      const __m512i bits = _mm512_maskz_loadu_epi16(k, xr + c);
      _mm512_mask_storeu_epi16(orow + c, k, binary_apply(bits, keep, limit));
    }
  }
}

template <typename in_t, typename out_t>
COMBCN_AVX512 void mask_multiply_avx512(const in_t* x, out_t* out, const float* m, int64_t nvox, int64_t C) {
  if constexpr (std::is_same_v<in_t, uint16_t> && std::is_same_v<out_t, uint16_t>) {
    if (all_binary(m, nvox)) {
      mask_multiply_binary_bf16(x, out, m, nvox, C);
      return;
    }
  }
  for (int64_t v = 0; v < nvox; ++v) {
    const __m512 mv = _mm512_set1_ps(m[v]);
    const in_t* xr = x + v * C;
    out_t* orow = out + v * C;
    for (int64_t c = 0; c < C; c += 16) {
      const __mmask16 k = tail_mask(C - c);
      store16(orow + c, _mm512_mul_ps(load16(xr + c, k), mv), k);
    }
  }
}

template <typename in_t, typename out_t>
COMBCN_AVX512 void epilogue_avx512(const in_t* conv, out_t* out, out_t* new_mask, const float* count, int64_t nvox,
                                   int64_t C, float window, float threshold, const float* scale, const float* add,
                                   const float* hole, bool relu) {
  constexpr int64_t kBlock = 256;  // voxels whose ratios are divided at once, 16 per instruction
  alignas(64) float ratio[kBlock];
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t v0 = 0; v0 < nvox; v0 += kBlock) {
    const int64_t nb = std::min(kBlock, nvox - v0);
    for (int64_t i = 0; i < nb; i += 16) {
      const __mmask16 k = tail_mask(nb - i);
      const __m512 s = _mm512_maskz_loadu_ps(k, count + v0 + i);
      const __mmask16 valid = _mm512_mask_cmp_ps_mask(k, s, _mm512_set1_ps(threshold), _CMP_GT_OQ);
      // window / s where valid; -1 marks a hole voxel (a ratio is never negative).
      const __m512 r = _mm512_mask_div_ps(_mm512_set1_ps(-1.0f), valid, _mm512_set1_ps(window), s);
      _mm512_mask_storeu_ps(ratio + i, k, r);
      if constexpr (std::is_same_v<out_t, float>) {
        _mm512_mask_storeu_ps(new_mask + v0 + i, k, _mm512_maskz_mov_ps(valid, _mm512_set1_ps(1.0f)));
      } else {
        _mm256_mask_storeu_epi16(new_mask + v0 + i, k, _mm256_maskz_mov_epi16(valid, _mm256_set1_epi16(0x3F80)));
      }
    }
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t v = v0 + b;
      out_t* orow = out + v * C;
      if (ratio[b] >= 0.0f) {
        const __m512 rv = _mm512_set1_ps(ratio[b]);
        const in_t* arow = conv + v * C;
        for (int64_t c = 0; c < C; c += 16) {
          const __mmask16 k = tail_mask(C - c);
          const __m512 rs = _mm512_mul_ps(rv, _mm512_maskz_loadu_ps(k, scale + c));
          __m512 y = _mm512_add_ps(_mm512_mul_ps(rs, load16(arow + c, k)), _mm512_maskz_loadu_ps(k, add + c));
          // max returns its second operand when either is NaN or both are zeros: NaN and -0 pass, as relu()
          if (relu) y = _mm512_max_ps(zero, y);
          store16(orow + c, y, k);
        }
      } else {
        for (int64_t c = 0; c < C; c += 16) {
          const __mmask16 k = tail_mask(C - c);
          store16(orow + c, _mm512_maskz_loadu_ps(k, hole + c), k);
        }
      }
    }
  }
}

COMBCN_AVX512 void box_count_avx512(const float* m, const BoxGeometry& g, int64_t to, float* plane, float* rows,
                                    float* count) {
  combcn::ops::box_count<float>(m, g, to, plane, rows, count);  // the same loops, vectorised 16 wide
}

#endif  // COMBCN_HAVE_AVX512_KERNELS

}  // namespace

std::string active() { return use_avx512() ? "avx512" : "scalar"; }

std::string configure(int64_t enable) {
  if (enable == 0 || enable == 1) {
    use_avx512();  // read the environment first, so that it cannot overwrite this choice later
    g_enabled.store(static_cast<int>(enable));
  }
  return active();
}

bool box_count(const float* m, const BoxGeometry& geometry, int64_t to, float* plane, float* rows, float* count) {
#if COMBCN_HAVE_AVX512_KERNELS
  if (!use_avx512()) return false;
  box_count_avx512(m, geometry, to, plane, rows, count);
  return true;
#else
  (void)m, (void)geometry, (void)to, (void)plane, (void)rows, (void)count;
  return false;
#endif
}

bool mask_multiply(const void* x, c10::ScalarType x_type, void* out, c10::ScalarType out_type, const float* m,
                   int64_t nvox, int64_t C) {
#if COMBCN_HAVE_AVX512_KERNELS
  if (!use_avx512()) return false;
  using bf = uint16_t;
  if (x_type == c10::kBFloat16 && out_type == c10::kBFloat16) {
    mask_multiply_avx512(static_cast<const bf*>(x), static_cast<bf*>(out), m, nvox, C);
  } else if (x_type == c10::kFloat && out_type == c10::kFloat) {
    mask_multiply_avx512(static_cast<const float*>(x), static_cast<float*>(out), m, nvox, C);
  } else if (x_type == c10::kBFloat16 && out_type == c10::kFloat) {
    mask_multiply_avx512(static_cast<const bf*>(x), static_cast<float*>(out), m, nvox, C);
  } else {
    return false;
  }
  return true;
#else
  (void)x, (void)x_type, (void)out, (void)out_type, (void)m, (void)nvox, (void)C;
  return false;
#endif
}

bool epilogue(const void* conv, c10::ScalarType conv_type, void* out, c10::ScalarType out_type, void* new_mask,
              const float* count, int64_t nvox, int64_t C, float window, float threshold, const float* scale,
              const float* add, const float* hole, bool relu) {
#if COMBCN_HAVE_AVX512_KERNELS
  if (!use_avx512()) return false;
  using bf = uint16_t;
  if (conv_type == c10::kBFloat16 && out_type == c10::kBFloat16) {
    epilogue_avx512(static_cast<const bf*>(conv), static_cast<bf*>(out), static_cast<bf*>(new_mask), count, nvox,
                    C, window, threshold, scale, add, hole, relu);
  } else if (conv_type == c10::kFloat && out_type == c10::kFloat) {
    epilogue_avx512(static_cast<const float*>(conv), static_cast<float*>(out), static_cast<float*>(new_mask),
                    count, nvox, C, window, threshold, scale, add, hole, relu);
  } else if (conv_type == c10::kFloat && out_type == c10::kBFloat16) {
    epilogue_avx512(static_cast<const float*>(conv), static_cast<bf*>(out), static_cast<bf*>(new_mask), count,
                    nvox, C, window, threshold, scale, add, hole, relu);
  } else {
    return false;
  }
  return true;
#else
  (void)conv, (void)conv_type, (void)out, (void)out_type, (void)new_mask, (void)count, (void)nvox, (void)C;
  (void)window, (void)threshold, (void)scale, (void)add, (void)hole, (void)relu;
  return false;
#endif
}

}  // namespace combcn::ops::simd
