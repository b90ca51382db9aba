// Shared pieces of the Mamba CPU kernels: lane width, vectorisable elementwise math, strided views.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace lmbench_mamba {

constexpr int64_t TC = 32;  // tokens per chunk (the scan's checkpoint interval)

template <typename T>
struct Lanes {
  static constexpr int64_t W = 64 / sizeof(T);  // 16 floats, 8 doubles
};

// ---------------------------------------------------------------------------------------------------------------
// Elementwise math. float: branch-free polynomials the compiler vectorises (max rel. error ~2 ulp for exp, ~1e-7 for
// log1p on its range); double: the libm functions (float64 is the exactness path, speed matters less).
// ---------------------------------------------------------------------------------------------------------------
inline float exp_f(float x) {
  // Cephes expf: exp(x) = 2^k exp(r), r = x - k ln2 in [-ln2/2, ln2/2], degree-6 polynomial for exp(r).
  x = std::min(88.3762626647949f, std::max(-87.3365447505531f, x));
  const float k = std::nearbyint(x * 1.44269504088896341f);
  float r = x - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float log1p_unit_f(float e) {
  // log1p(e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) in [0, 1/3]; the series to s^13 is within 1e-8.
  const float s = e / (2.0f + e);
  const float s2 = s * s;
  float p = 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

template <typename T>
inline T exp_t(T x) {
  if constexpr (std::is_same_v<T, float>) return exp_f(x);
  else return std::exp(x);
}

template <typename T>
inline T softplus_t(T x) {  // max(x, 0) + log1p(exp(-|x|)): no overflow, exact for large |x|
  if constexpr (std::is_same_v<T, float>) return std::max(x, 0.0f) + log1p_unit_f(exp_f(-std::abs(x)));
  else return std::max(x, T(0)) + std::log1p(std::exp(-std::abs(x)));
}

template <typename T>
inline T sigmoid_t(T x) {
  return T(1) / (T(1) + exp_t<T>(-x));
}

// ---------------------------------------------------------------------------------------------------------------
// Strided (batch, L, C) views and the chunk gather / scatter.
// ---------------------------------------------------------------------------------------------------------------
template <typename T>
struct View3 {
  const T* p = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0;
  View3() = default;
  explicit View3(const at::Tensor& t) : p(t.data_ptr<T>()), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)) {}
};

// dst[t][w] = src[b, t0 + t, c0 + w] for t < tn, w < nw; 0 elsewhere (dst is TC x W).
template <typename T>
inline void gather(T* dst, const View3<T>& v, int64_t b, int64_t t0, int64_t tn, int64_t c0, int64_t nw,
                   int64_t W) {
  std::fill(dst, dst + TC * W, T(0));
  const T* base = v.p + b * v.s0 + t0 * v.s1 + c0 * v.s2;
  for (int64_t t = 0; t < tn; ++t) {
    const T* row = base + t * v.s1;
    T* out = dst + t * W;
    if (v.s2 == 1) {
      std::memcpy(out, row, nw * sizeof(T));
    } else {
      for (int64_t w = 0; w < nw; ++w) out[w] = row[w * v.s2];
    }
  }
}

// dst[b, t0 + t, c0 + w] = src[t][w] into a contiguous (batch, L, C) tensor.
template <typename T>
inline void scatter(T* dst, const T* src, int64_t b, int64_t L, int64_t C, int64_t t0, int64_t tn, int64_t c0,
                    int64_t nw, int64_t W) {
  for (int64_t t = 0; t < tn; ++t) std::memcpy(dst + (b * L + t0 + t) * C + c0, src + t * W, nw * sizeof(T));
}

}  // namespace lmbench_mamba
