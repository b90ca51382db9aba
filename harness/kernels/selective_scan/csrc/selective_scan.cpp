// Mamba's selective scan on CPU: forward and exact backward, fused (see docs/mamba-scan.md).
//
//   dt_t = softplus(delta_t + bias)        (or delta_t + bias without softplus)      per channel d
//   h_t  = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t                                 state (d, n), h_{-1} = 0
//   y_t  = sum_n C_t[n] h_t[n] + D * u_t
//   out_t = y_t * silu(z_t)                (when z is given)
//
// Layout: channel-last. u, delta, z: (batch, L, D) with any strides; B, C: (batch, L, N) with any strides;
// A: (D, N), D and bias: (D,) contiguous. out: (batch, L, D) contiguous.
//
// Vectorisation is over channels: a "block" is W consecutive channels (W = 64 bytes of T, one AVX-512 register,
// two AVX2 ones) run in lock-step, so B_t[n] and C_t[n] are scalars broadcast to all lanes and no step needs a
// horizontal reduction. Time is cut into chunks of TC tokens: per chunk, inputs are gathered into small padded
// lane-major buffers (padding lanes are zero, which keeps their state at zero), so any input strides work and the
// hot loops are unit-stride. A task is one batch row and a group of channel blocks; blocks of a task run chunk by
// chunk, so the chunk's B and C (and, in the backward, the lane partial sums of dB and dC) are shared by them.
//
// The forward stores only the state at the start of every chunk (ckpt: (batch, nchunk, N, D)). The backward runs
// the chunks in reverse: it recomputes the chunk's forward from its checkpoint (keeping dt, exp(dt A), h and the
// ungated y in L1/L2-sized buffers) and then sweeps it right to left with the adjoint dh_t = C_t g_t + a_{t+1} dh_{t+1}.
// Gradients of per-channel parameters (A, D, bias) are written per batch row and summed by the caller, and dB, dC
// per channel group, so no two threads ever write the same element.
#include "common.h"
#include "kernels.h"

#include <ATen/Parallel.h>

#include <vector>

namespace lmbench_mamba {
namespace {

struct Shape {
  int64_t Bt, L, D, N, nchunk, nblk, groups, per_group;
};

Shape make_shape(const at::Tensor& u, const at::Tensor& A, int64_t W) {
  Shape s{};
  s.Bt = u.size(0);
  s.L = u.size(1);
  s.D = u.size(2);
  s.N = A.size(1);
  s.nchunk = std::max<int64_t>(1, (s.L + TC - 1) / TC);
  s.nblk = (s.D + W - 1) / W;
  // Enough tasks to keep every thread busy (2 per thread), but no more channel groups than needed: each group of a
  // row gathers B and C again and has its own dB/dC partial sums.
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t want = 2 * threads;
  s.groups = std::min<int64_t>(std::max<int64_t>(1, s.nblk), std::max<int64_t>(1, (want + s.Bt - 1) / std::max<int64_t>(1, s.Bt)));
  s.per_group = (s.nblk + s.groups - 1) / s.groups;
  s.groups = std::max<int64_t>(1, (s.nblk + s.per_group - 1) / std::max<int64_t>(1, s.per_group));
  return s;
}

void check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const at::Tensor& Dv, const c10::optional<at::Tensor>& z,
                  const at::Tensor& bias) {
  TORCH_CHECK(u.device().is_cpu(), "selective_scan_cpu: tensors must be on the CPU");
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, "selective_scan_cpu: float32/64 only");
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "selective_scan_cpu: u and delta must be (batch, L, D)");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(2) && A.is_contiguous(), "selective_scan_cpu: A must be (D, N)");
  const int64_t N = A.size(1);
  TORCH_CHECK(B.dim() == 3 && B.size(0) == u.size(0) && B.size(1) == u.size(1) && B.size(2) == N,
              "selective_scan_cpu: B must be (batch, L, N)");
  TORCH_CHECK(C.sizes() == B.sizes(), "selective_scan_cpu: C must be (batch, L, N)");
  TORCH_CHECK(Dv.dim() == 1 && Dv.size(0) == u.size(2) && Dv.is_contiguous(), "selective_scan_cpu: D must be (D,)");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == u.size(2) && bias.is_contiguous(),
              "selective_scan_cpu: delta_bias must be (D,)");
  if (z.has_value()) TORCH_CHECK(z->sizes() == u.sizes(), "selective_scan_cpu: z must be (batch, L, D)");
  for (const auto* t : {&delta, &A, &B, &C, &Dv, &bias})
    TORCH_CHECK(t->scalar_type() == u.scalar_type(), "selective_scan_cpu: all tensors must have u's dtype");
  if (z.has_value()) TORCH_CHECK(z->scalar_type() == u.scalar_type(), "selective_scan_cpu: z must have u's dtype");
}

// Per-block parameters in lane layout: A as [N][W], D and bias as [W] (padding lanes 0).
template <typename T>
struct BlockParams {
  std::vector<T> A, D, bias;
  BlockParams(const T* Ap, const T* Dp, const T* bp, int64_t c0, int64_t nw, int64_t N, int64_t W)
      : A(N * W, T(0)), D(W, T(0)), bias(W, T(0)) {
    for (int64_t w = 0; w < nw; ++w) {
      for (int64_t n = 0; n < N; ++n) A[n * W + w] = Ap[(c0 + w) * N + n];
      D[w] = Dp[c0 + w];
      bias[w] = bp[c0 + w];
    }
  }
};

// One chunk of the forward recursion for one block. h: [N][W] state (updated in place). Inputs are TC x W
// (u, delta, z) and TC x N (B, C) lane buffers. Writes the gated output to out[t][w]; if the recompute buffers are
// given (backward), also dt[t][w], a[t][n][w] = exp(dt A), hs[t][n][w] = h_t and y[t][w] (before gating).
template <typename T, bool SOFTPLUS, bool HAS_Z, bool KEEP>
static inline void chunk_forward(T* __restrict h, const T* __restrict u, const T* __restrict dl,
                                 const T* __restrict zl, const T* __restrict Bc, const T* __restrict Cc,
                                 const BlockParams<T>& prm, int64_t tn, int64_t N, T* __restrict out,
                                 T* __restrict dts, T* __restrict as, T* __restrict hs, T* __restrict ys) {
  constexpr int64_t W = Lanes<T>::W;
  const T* __restrict Ap = prm.A.data();
  const T* __restrict Dp = prm.D.data();
  const T* __restrict bp = prm.bias.data();
  alignas(64) T dt[W], du[W], y[W];
  for (int64_t t = 0; t < tn; ++t) {
    const T* ut = u + t * W;
    const T* dlt = dl + t * W;
#pragma omp simd
    for (int64_t w = 0; w < W; ++w) {
      const T x = dlt[w] + bp[w];
      dt[w] = SOFTPLUS ? softplus_t<T>(x) : x;
      du[w] = dt[w] * ut[w];
      y[w] = Dp[w] * ut[w];
    }
    if constexpr (KEEP) std::memcpy(dts + t * W, dt, sizeof(dt));
    for (int64_t n = 0; n < N; ++n) {
      const T bn = Bc[t * N + n], cn = Cc[t * N + n];
      T* hn = h + n * W;
      const T* an = Ap + n * W;
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) {
        const T a = exp_t<T>(dt[w] * an[w]);
        hn[w] = a * hn[w] + du[w] * bn;
        y[w] += hn[w] * cn;
        if constexpr (KEEP) {
          as[(t * N + n) * W + w] = a;
          hs[(t * N + n) * W + w] = hn[w];
        }
      }
    }
    if constexpr (KEEP) std::memcpy(ys + t * W, y, sizeof(y));
    T* ot = out + t * W;
    if constexpr (HAS_Z) {
      const T* zt = zl + t * W;
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) ot[w] = y[w] * zt[w] * sigmoid_t<T>(zt[w]);
    } else {
#pragma omp simd
      for (int64_t w = 0; w < W; ++w) ot[w] = y[w];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------------------------
template <typename T, bool SOFTPLUS, bool HAS_Z>
void forward_impl(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& C, const at::Tensor& Dv, const c10::optional<at::Tensor>& z,
                  const at::Tensor& bias, at::Tensor& out, at::Tensor& ckpt, const Shape& s) {
  constexpr int64_t W = Lanes<T>::W;
  const View3<T> vu(u), vd(delta), vB(B), vC(C);
  const View3<T> vz = HAS_Z ? View3<T>(*z) : View3<T>();
  const T* Ap = A.data_ptr<T>();
  const T* Dp = Dv.data_ptr<T>();
  const T* bp = bias.data_ptr<T>();
  T* op = out.data_ptr<T>();
  T* cp = ckpt.data_ptr<T>();
  const int64_t N = s.N;
  at::parallel_for(0, s.Bt * s.groups, 1, [&](int64_t task0, int64_t task1) {
    std::vector<T> ub(TC * W), db(TC * W), zb(HAS_Z ? TC * W : 0), ob(TC * W), Bb(TC * N), Cb(TC * N);
    for (int64_t task = task0; task < task1; ++task) {
      const int64_t b = task / s.groups, g = task % s.groups;
      const int64_t k0 = g * s.per_group, k1 = std::min(s.nblk, k0 + s.per_group);
      std::vector<BlockParams<T>> prm;
      for (int64_t k = k0; k < k1; ++k) prm.emplace_back(Ap, Dp, bp, k * W, std::min(W, s.D - k * W), N, W);
      std::vector<T> h((k1 - k0) * N * W, T(0));
      for (int64_t c = 0; c < s.nchunk; ++c) {
        const int64_t t0 = c * TC, tn = std::min(TC, s.L - t0);
        gather(Bb.data(), vB, b, t0, tn, 0, N, N);
        gather(Cb.data(), vC, b, t0, tn, 0, N, N);
        for (int64_t k = k0; k < k1; ++k) {
          const int64_t c0 = k * W, nw = std::min(W, s.D - c0);
          T* hk = h.data() + (k - k0) * N * W;
          for (int64_t n = 0; n < N; ++n)
            std::memcpy(cp + ((b * s.nchunk + c) * N + n) * s.D + c0, hk + n * W, nw * sizeof(T));
          gather(ub.data(), vu, b, t0, tn, c0, nw, W);
          gather(db.data(), vd, b, t0, tn, c0, nw, W);
          if (HAS_Z) gather(zb.data(), vz, b, t0, tn, c0, nw, W);
          chunk_forward<T, SOFTPLUS, HAS_Z, false>(hk, ub.data(), db.data(), zb.data(), Bb.data(), Cb.data(),
                                                   prm[k - k0], tn, N, ob.data(), nullptr, nullptr, nullptr, nullptr);
          scatter(op, ob.data(), b, s.L, s.D, t0, tn, c0, nw, W);
        }
      }
    }
  });
}

}  // namespace

std::vector<at::Tensor> selective_scan_forward(at::Tensor u, at::Tensor delta, at::Tensor A,
                                                  at::Tensor B, at::Tensor C, at::Tensor Dv,
                                                  c10::optional<at::Tensor> z, at::Tensor bias,
                                                  bool softplus) {
  check_inputs(u, delta, A, B, C, Dv, z, bias);
  auto out = at::empty(u.sizes(), u.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor ckpt;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_forward", [&] {
    using T = scalar_t;
    const Shape s = make_shape(u, A, Lanes<T>::W);
    ckpt = at::empty({s.Bt, s.nchunk, s.N, s.D}, u.options());
    const bool hz = z.has_value();
    if (softplus && hz) forward_impl<T, true, true>(u, delta, A, B, C, Dv, z, bias, out, ckpt, s);
    else if (softplus) forward_impl<T, true, false>(u, delta, A, B, C, Dv, z, bias, out, ckpt, s);
    else if (hz) forward_impl<T, false, true>(u, delta, A, B, C, Dv, z, bias, out, ckpt, s);
    else forward_impl<T, false, false>(u, delta, A, B, C, Dv, z, bias, out, ckpt, s);
  });
  return {out, ckpt};
}

// ---------------------------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------------------------
namespace {

template <typename T, bool SOFTPLUS, bool HAS_Z>
void backward_impl(const at::Tensor& gout, const at::Tensor& u, const at::Tensor& delta,
                   const at::Tensor& A, const at::Tensor& B, const at::Tensor& C, const at::Tensor& Dv,
                   const c10::optional<at::Tensor>& z, const at::Tensor& bias, const at::Tensor& ckpt,
                   at::Tensor& du_t, at::Tensor& ddelta_t, at::Tensor& dz_t, at::Tensor& dA_p,
                   at::Tensor& dB_p, at::Tensor& dC_p, at::Tensor& dD_p, at::Tensor& dbias_p,
                   const Shape& s) {
  constexpr int64_t W = Lanes<T>::W;
  const View3<T> vg(gout), vu(u), vd(delta), vB(B), vC(C);
  const View3<T> vz = HAS_Z ? View3<T>(*z) : View3<T>();
  const T* Ap = A.data_ptr<T>();
  const T* Dp = Dv.data_ptr<T>();
  const T* bp = bias.data_ptr<T>();
  const T* cp = ckpt.data_ptr<T>();
  T* dup = du_t.data_ptr<T>();
  T* ddp = ddelta_t.data_ptr<T>();
  T* dzp = HAS_Z ? dz_t.data_ptr<T>() : nullptr;
  T* dAp = dA_p.data_ptr<T>();   // (Bt, N, D)
  T* dBp = dB_p.data_ptr<T>();   // (Bt, groups, L, N)
  T* dCp = dC_p.data_ptr<T>();
  T* dDp = dD_p.data_ptr<T>();   // (Bt, D)
  T* dbp = dbias_p.data_ptr<T>();
  const int64_t N = s.N;
  at::parallel_for(0, s.Bt * s.groups, 1, [&](int64_t task0, int64_t task1) {
    std::vector<T> ub(TC * W), db(TC * W), zb(HAS_Z ? TC * W : 0), gb(TC * W), Bb(TC * N), Cb(TC * N);
    std::vector<T> dts(TC * W), as(TC * N * W), hs(TC * N * W), ys(TC * W), ob(TC * W);
    std::vector<T> dul(TC * W), ddl(TC * W), dzl(HAS_Z ? TC * W : 0), dBl(TC * N * W), dCl(TC * N * W);
    std::vector<T> h0(N * W);
    for (int64_t task = task0; task < task1; ++task) {
      const int64_t b = task / s.groups, g = task % s.groups;
      const int64_t k0 = g * s.per_group, k1 = std::min(s.nblk, k0 + s.per_group), nk = k1 - k0;
      std::vector<BlockParams<T>> prm;
      for (int64_t k = k0; k < k1; ++k) prm.emplace_back(Ap, Dp, bp, k * W, std::min(W, s.D - k * W), N, W);
      std::vector<T> dh(nk * N * W, T(0)), dA(nk * N * W, T(0)), dD(nk * W, T(0)), dbias(nk * W, T(0));
      for (int64_t c = s.nchunk - 1; c >= 0; --c) {
        const int64_t t0 = c * TC, tn = std::min(TC, s.L - t0);
        gather(Bb.data(), vB, b, t0, tn, 0, N, N);
        gather(Cb.data(), vC, b, t0, tn, 0, N, N);
        std::fill(dBl.begin(), dBl.end(), T(0));
        std::fill(dCl.begin(), dCl.end(), T(0));
        for (int64_t k = k0; k < k1; ++k) {
          const int64_t c0 = k * W, nw = std::min(W, s.D - c0);
          const BlockParams<T>& P = prm[k - k0];
          std::fill(h0.begin(), h0.end(), T(0));
          for (int64_t n = 0; n < N; ++n)
            std::memcpy(h0.data() + n * W, cp + ((b * s.nchunk + c) * N + n) * s.D + c0, nw * sizeof(T));
          gather(ub.data(), vu, b, t0, tn, c0, nw, W);
          gather(db.data(), vd, b, t0, tn, c0, nw, W);
          gather(gb.data(), vg, b, t0, tn, c0, nw, W);
          if (HAS_Z) gather(zb.data(), vz, b, t0, tn, c0, nw, W);
          {
            std::vector<T> hrun(h0);
            chunk_forward<T, SOFTPLUS, HAS_Z, true>(hrun.data(), ub.data(), db.data(), zb.data(), Bb.data(),
                                                    Cb.data(), P, tn, N, ob.data(), dts.data(), as.data(), hs.data(),
                                                    ys.data());
          }
          T* __restrict dhk = dh.data() + (k - k0) * N * W;
          T* __restrict dAk = dA.data() + (k - k0) * N * W;
          T* __restrict dDk = dD.data() + (k - k0) * W;
          T* __restrict dbk = dbias.data() + (k - k0) * W;
          const T* __restrict Apk = P.A.data();
          const T* __restrict Dpk = P.D.data();
          const T* __restrict bpk = P.bias.data();
          alignas(64) T gv[W], ddt[W], duv[W], dtu[W];
          for (int64_t t = tn - 1; t >= 0; --t) {
            const T* ut = ub.data() + t * W;
            const T* dtt = dts.data() + t * W;
            const T* gt = gb.data() + t * W;
            const T* yt = ys.data() + t * W;
            if constexpr (HAS_Z) {
              const T* zt = zb.data() + t * W;
              T* dzt = dzl.data() + t * W;
#pragma omp simd
              for (int64_t w = 0; w < W; ++w) {
                const T sg = sigmoid_t<T>(zt[w]);
                dzt[w] = gt[w] * yt[w] * sg * (T(1) + zt[w] * (T(1) - sg));
                gv[w] = gt[w] * zt[w] * sg;
              }
            } else {
#pragma omp simd
              for (int64_t w = 0; w < W; ++w) gv[w] = gt[w];
            }
#pragma omp simd
            for (int64_t w = 0; w < W; ++w) {
              dDk[w] += gv[w] * ut[w];
              duv[w] = gv[w] * Dpk[w];
              ddt[w] = T(0);
              dtu[w] = dtt[w] * ut[w];
            }
            const T* hprev_base = t > 0 ? hs.data() + (t - 1) * N * W : h0.data();
            for (int64_t n = 0; n < N; ++n) {
              const T bn = Bb[t * N + n], cn = Cb[t * N + n];
              const T* at = as.data() + (t * N + n) * W;
              const T* ht = hs.data() + (t * N + n) * W;
              const T* hp = hprev_base + n * W;
              const T* an = Apk + n * W;
              T* dhn = dhk + n * W;
              T* dAn = dAk + n * W;
              T* dBn = dBl.data() + (t * N + n) * W;
              T* dCn = dCl.data() + (t * N + n) * W;
#pragma omp simd
              for (int64_t w = 0; w < W; ++w) {
                const T d = dhn[w] + gv[w] * cn;        // dL/dh_t
                dCn[w] += gv[w] * ht[w];
                const T q = d * hp[w] * at[w];          // dL/d(dt A)
                dAn[w] += q * dtt[w];
                ddt[w] += q * an[w] + d * bn * ut[w];
                dBn[w] += d * dtu[w];
                duv[w] += d * dtt[w] * bn;
                dhn[w] = d * at[w];                     // carried to t - 1
              }
            }
            T* dut = dul.data() + t * W;
            T* ddlt = ddl.data() + t * W;
            const T* dlt = db.data() + t * W;
#pragma omp simd
            for (int64_t w = 0; w < W; ++w) {
              const T dd = SOFTPLUS ? ddt[w] * sigmoid_t<T>(dlt[w] + bpk[w]) : ddt[w];
              ddlt[w] = dd;
              dbk[w] += dd;
              dut[w] = duv[w];
            }
          }
          scatter(dup, dul.data(), b, s.L, s.D, t0, tn, c0, nw, W);
          scatter(ddp, ddl.data(), b, s.L, s.D, t0, tn, c0, nw, W);
          if (HAS_Z) scatter(dzp, dzl.data(), b, s.L, s.D, t0, tn, c0, nw, W);
        }
        // Lane sums of dB, dC for this chunk (padding lanes hold zeros).
        T* dBrow = dBp + ((b * s.groups + g) * s.L + t0) * N;
        T* dCrow = dCp + ((b * s.groups + g) * s.L + t0) * N;
        for (int64_t i = 0; i < tn * N; ++i) {
          T sb = T(0), sc = T(0);
          const T* xb = dBl.data() + i * W;
          const T* xc = dCl.data() + i * W;
#pragma omp simd reduction(+ : sb, sc)
          for (int64_t w = 0; w < W; ++w) {
            sb += xb[w];
            sc += xc[w];
          }
          dBrow[i] = sb;
          dCrow[i] = sc;
        }
      }
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t c0 = k * W, nw = std::min(W, s.D - c0);
        for (int64_t n = 0; n < N; ++n)
          std::memcpy(dAp + (b * N + n) * s.D + c0, dA.data() + ((k - k0) * N + n) * W, nw * sizeof(T));
        std::memcpy(dDp + b * s.D + c0, dD.data() + (k - k0) * W, nw * sizeof(T));
        std::memcpy(dbp + b * s.D + c0, dbias.data() + (k - k0) * W, nw * sizeof(T));
      }
    }
  });
}

}  // namespace

// Returns du, ddelta, dz (empty if no z), dA (Bt, N, D), dB (Bt, groups, L, N), dC (same), dD (Bt, D), dbias (Bt, D):
// the last five are per-row / per-group partial sums the caller reduces.
std::vector<at::Tensor> selective_scan_backward(at::Tensor gout, at::Tensor u, at::Tensor delta,
                                                   at::Tensor A, at::Tensor B, at::Tensor C,
                                                   at::Tensor Dv, c10::optional<at::Tensor> z,
                                                   at::Tensor bias, at::Tensor ckpt, bool softplus) {
  check_inputs(u, delta, A, B, C, Dv, z, bias);
  TORCH_CHECK(gout.sizes() == u.sizes() && gout.scalar_type() == u.scalar_type(),
              "selective_scan_backward: grad_out must match u");
  std::vector<at::Tensor> res;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_backward", [&] {
    using T = scalar_t;
    const Shape s = make_shape(u, A, Lanes<T>::W);
    TORCH_CHECK(ckpt.dim() == 4 && ckpt.size(0) == s.Bt && ckpt.size(1) == s.nchunk && ckpt.size(2) == s.N &&
                    ckpt.size(3) == s.D && ckpt.is_contiguous() && ckpt.scalar_type() == u.scalar_type(),
                "selective_scan_backward: ckpt must be the forward's (batch, nchunk, N, D) checkpoints");
    auto opt = u.options();
    auto du = at::empty({s.Bt, s.L, s.D}, opt);
    auto ddelta = at::empty({s.Bt, s.L, s.D}, opt);
    auto dz = z.has_value() ? at::empty({s.Bt, s.L, s.D}, opt) : at::empty({0}, opt);
    auto dA = at::empty({s.Bt, s.N, s.D}, opt);
    auto dB = at::empty({s.Bt, s.groups, s.L, s.N}, opt);
    auto dC = at::empty({s.Bt, s.groups, s.L, s.N}, opt);
    auto dD = at::empty({s.Bt, s.D}, opt);
    auto dbias = at::empty({s.Bt, s.D}, opt);
    const bool hz = z.has_value();
    auto run = [&](auto sp, auto hzc) {
      backward_impl<T, decltype(sp)::value, decltype(hzc)::value>(gout, u, delta, A, B, C, Dv, z, bias, ckpt, du,
                                                                    ddelta, dz, dA, dB, dC, dD, dbias, s);
    };
    using Y = std::true_type;
    using N_ = std::false_type;
    if (softplus && hz) run(Y{}, Y{});
    else if (softplus) run(Y{}, N_{});
    else if (hz) run(N_{}, Y{});
    else run(N_{}, N_{});
    res = {du, ddelta, dz, dA, dB, dC, dD, dbias};
  });
  return res;
}

}  // namespace lmbench_mamba
