// Mamba's short causal depthwise convolution followed by SiLU, channel-last, forward and exact backward.
//
//   pre[b, t, d] = bias[d] + sum_k w[k, d] x[b, t - K + 1 + k, d]   (x = 0 before t = 0),   out = pre * sigmoid(pre)
//
// Why a kernel for four taps: in HF's channel-first form (conv1d on (batch, D, L), then SiLU, then a transpose for
// x_proj) the backward of SiLU and of the conv run on mismatched layouts and cost more than the selective scan
// itself. Here x is (batch, L, D) with unit channel stride (e.g. the first half of in_proj's output), out is
// contiguous (batch, L, D), and every loop is over contiguous channels. weight_t is the (K, D) transpose of
// conv1d.weight. Tasks are (batch row, chunk of tokens); the backward recomputes pre (K multiply-adds) instead of
// saving it, and writes per-task partial sums of dweight and dbias that the caller adds up.
#include "common.h"
#include "kernels.h"

#include <ATen/Parallel.h>

#include <vector>

namespace lmbench_mamba {
namespace {

constexpr int64_t kConvChunk = 64;  // tokens per task

struct ConvShape {
  int64_t Bt, L, D, K, nt;
};

ConvShape conv_shape(const at::Tensor& x, const at::Tensor& weight_t, const at::Tensor& bias) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "causal_conv1d_silu: x must be a CPU (batch, L, D) tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "causal_conv1d_silu: float32/64 only");
  TORCH_CHECK(x.stride(2) == 1, "causal_conv1d_silu: x must have unit channel stride");
  TORCH_CHECK(weight_t.dim() == 2 && weight_t.size(1) == x.size(2) && weight_t.is_contiguous(),
              "causal_conv1d_silu: weight_t must be contiguous (K, D)");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(2) && bias.is_contiguous(),
              "causal_conv1d_silu: bias must be (D,)");
  TORCH_CHECK(weight_t.scalar_type() == x.scalar_type() && bias.scalar_type() == x.scalar_type(),
              "causal_conv1d_silu: weight and bias must have x's dtype");
  ConvShape s{x.size(0), x.size(1), x.size(2), weight_t.size(0), 0};
  s.nt = std::max<int64_t>(1, (s.L + kConvChunk - 1) / kConvChunk);
  return s;
}

// pre[d] = bias[d] + sum_k w[k][d] x[t - K + 1 + k][d] for one token t.
template <typename T>
inline void conv_row(T* __restrict pre, const T* __restrict xb, int64_t s1, const T* __restrict w,
                     const T* __restrict bias, int64_t t, int64_t K, int64_t D) {
  std::memcpy(pre, bias, D * sizeof(T));
  for (int64_t k = std::max<int64_t>(0, K - 1 - t); k < K; ++k) {
    const T* xr = xb + (t - K + 1 + k) * s1;
    const T* wk = w + k * D;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) pre[d] += wk[d] * xr[d];
  }
}

template <typename T>
void conv_forward_impl(const at::Tensor& x, const at::Tensor& weight_t, const at::Tensor& bias, at::Tensor& out,
                       const ConvShape& s) {
  const T* xp = x.data_ptr<T>();
  const T* wp = weight_t.data_ptr<T>();
  const T* bp = bias.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1);
  at::parallel_for(0, s.Bt * s.nt, 1, [&](int64_t task0, int64_t task1) {
    std::vector<T> pre(s.D);
    for (int64_t task = task0; task < task1; ++task) {
      const int64_t b = task / s.nt, t0 = (task % s.nt) * kConvChunk, t1 = std::min(s.L, t0 + kConvChunk);
      for (int64_t t = t0; t < t1; ++t) {
        conv_row(pre.data(), xp + b * s0, s1, wp, bp, t, s.K, s.D);
        T* o = op + (b * s.L + t) * s.D;
        const T* pr = pre.data();
#pragma omp simd
        for (int64_t d = 0; d < s.D; ++d) o[d] = pr[d] * sigmoid_t<T>(pr[d]);
      }
    }
  });
}

template <typename T>
void conv_backward_impl(const at::Tensor& gout, const at::Tensor& x, const at::Tensor& weight_t,
                        const at::Tensor& bias, at::Tensor& dx, at::Tensor& dw, at::Tensor& db, const ConvShape& s) {
  const T* xp = x.data_ptr<T>();
  const T* gp = gout.data_ptr<T>();
  const T* wp = weight_t.data_ptr<T>();
  const T* bp = bias.data_ptr<T>();
  T* dxp = dx.data_ptr<T>();
  T* dwp = dw.data_ptr<T>();
  T* dbp = db.data_ptr<T>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1), K = s.K, D = s.D;
  at::parallel_for(0, s.Bt * s.nt, 1, [&](int64_t task0, int64_t task1) {
    std::vector<T> pre(D), gpre((kConvChunk + K - 1) * D);
    for (int64_t task = task0; task < task1; ++task) {
      const int64_t b = task / s.nt, t0 = (task % s.nt) * kConvChunk, t1 = std::min(s.L, t0 + kConvChunk);
      const int64_t t2 = std::min(s.L, t1 + K - 1);  // dx at t needs dL/dpre up to t + K - 1
      const T* xb = xp + b * s0;
      for (int64_t t = t0; t < t2; ++t) {  // dL/dpre = g * silu'(pre)
        conv_row(pre.data(), xb, s1, wp, bp, t, K, D);
        const T* g = gp + (b * s.L + t) * D;
        T* q = gpre.data() + (t - t0) * D;
        const T* pr = pre.data();
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          const T sg = sigmoid_t<T>(pr[d]);
          q[d] = g[d] * sg * (T(1) + pr[d] * (T(1) - sg));
        }
      }
      T* dwt = dwp + task * K * D;
      T* dbt = dbp + task * D;
      std::fill(dwt, dwt + K * D, T(0));
      std::fill(dbt, dbt + D, T(0));
      for (int64_t t = t0; t < t1; ++t) {
        const T* q = gpre.data() + (t - t0) * D;
        T* dxr = dxp + (b * s.L + t) * D;
        std::fill(dxr, dxr + D, T(0));
        for (int64_t k = 0; k < K; ++k) {
          const int64_t tf = t + K - 1 - k;  // output tf reads x[t] through tap k
          if (tf < t2) {
            const T* qf = gpre.data() + (tf - t0) * D;
            const T* wk = wp + k * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) dxr[d] += wk[d] * qf[d];
          }
          const int64_t ts = t - K + 1 + k;  // output t reads x[ts] through tap k
          if (ts >= 0) {
            const T* xr = xb + ts * s1;
            T* dwk = dwt + k * D;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) dwk[d] += q[d] * xr[d];
          }
        }
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) dbt[d] += q[d];
      }
    }
  });
}

}  // namespace

at::Tensor causal_conv1d_silu_forward(at::Tensor x, at::Tensor weight_t, at::Tensor bias) {
  const ConvShape s = conv_shape(x, weight_t, bias);
  auto out = at::empty({s.Bt, s.L, s.D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_silu_forward",
                             [&] { conv_forward_impl<scalar_t>(x, weight_t, bias, out, s); });
  return out;
}

// Returns dx (batch, L, D), dweight_t partials (tasks, K, D) and dbias partials (tasks, D).
std::vector<at::Tensor> causal_conv1d_silu_backward(at::Tensor gout, at::Tensor x, at::Tensor weight_t,
                                                    at::Tensor bias) {
  const ConvShape s = conv_shape(x, weight_t, bias);
  TORCH_CHECK(gout.sizes() == x.sizes() && gout.is_contiguous() && gout.scalar_type() == x.scalar_type(),
              "causal_conv1d_silu_backward: grad_out must be contiguous and match x");
  const int64_t ntask = s.Bt * s.nt;
  auto dx = at::empty({s.Bt, s.L, s.D}, x.options());
  auto dw = at::empty({ntask, s.K, s.D}, x.options());
  auto db = at::empty({ntask, s.D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_silu_backward",
                             [&] { conv_backward_impl<scalar_t>(gout, x, weight_t, bias, dx, dw, db, s); });
  return {dx, dw, db};
}

}  // namespace lmbench_mamba
