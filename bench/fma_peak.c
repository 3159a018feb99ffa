/* Peak multiply-add rate of one core: AVX-512 float32 FMA and AVX512-BF16 dot products (vdpbf16ps), for
 * comparing the convolutions of bench_op.py ("bare GFLOP/s") with what the core can do at all.
 *
 *   gcc -O2 -mavx512f -mavx512bf16 bench/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 *
 * 12 independent accumulators per loop, unrolled so that they stay in registers: enough to cover the
 * instructions' latency. The sums are printed so that nothing is optimised away. A CPU without AVX512-BF16
 * stops with SIGILL in the first loop. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 12
#define ROUNDS 20000000L

static double seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double bf16_gflops(float* sink) {
  __m512 acc[CHAINS];
  for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3F80); /* 1.0 */
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3000); /* a small value: no overflow */
  const double start = seconds();
  for (long i = 0; i < ROUNDS; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  const double elapsed = seconds() - start;
  for (int j = 0; j < CHAINS; ++j) *sink += _mm512_reduce_add_ps(acc[j]);
  return (double)ROUNDS * CHAINS * 32 * 2 / elapsed / 1e9; /* 32 bf16 products per instruction */
}

static double fp32_gflops(float* sink) {
  __m512 acc[CHAINS];
  for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_setzero_ps();
  const __m512 a = _mm512_set1_ps(1.0f), b = _mm512_set1_ps(1e-7f);
  const double start = seconds();
  for (long i = 0; i < ROUNDS; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < CHAINS; ++j) acc[j] = _mm512_fmadd_ps(a, b, acc[j]);
  }
  const double elapsed = seconds() - start;
  for (int j = 0; j < CHAINS; ++j) *sink += _mm512_reduce_add_ps(acc[j]);
  return (double)ROUNDS * CHAINS * 16 * 2 / elapsed / 1e9; /* 16 float lanes per instruction */
}

int main(void) {
  float sink = 0.0f;
  double best_bf16 = 0.0, best_fp32 = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const double g16 = bf16_gflops(&sink), g32 = fp32_gflops(&sink);
    if (g16 > best_bf16) best_bf16 = g16;
    if (g32 > best_fp32) best_fp32 = g32;
  }
  printf("one core, best of 3: bf16 dot products (vdpbf16ps zmm) %.0f GFLOP/s, float32 FMA (zmm) %.0f GFLOP/s\n",
         best_bf16, best_fp32);
  printf("(checksum %g)\n", (double)sink);
  return 0;
}
