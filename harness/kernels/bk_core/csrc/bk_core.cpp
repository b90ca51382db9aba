// BK-Core CPU kernels: Riccati (LU-pivot) form of diag((H - z)^-1) for a tridiagonal H, plus its exact O(N) VJP.
//
// Layout: v (B, N) contiguous; out (B, N, 2) = [Re, Im]; kpad (N + 1) with kpad[0] = kpad[N] = 0 and
// kpad[i] = k_{i-1} = coupling_{i-1}^2, so step i of the forward recursion reads kpad[i] and step i of the reverse
// recursion reads kpad[i + 1] without boundary branches. Complex numbers are carried as (re, im) pairs of T.
//
// Every recursion is a serial scan along N, which is latency-bound (a division per token for the pivots). We get
// throughput by running L independent "segments" in lock-step (lanes): whole rows when B is large, or chunks of a
// row when B is small. Chunks need a carry: the pivot recursion is a Moebius map, so a chunk is summarised by a 2x2
// complex matrix product (renormalised, which is exact projectively); the backward recursions are affine maps,
// summarised by (product of multipliers, zero-carry result). A serial pass over the chunks of each row turns those
// summaries into carries; then every chunk re-runs its recursion from the right carry.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int L = 8;              // lanes run in lock-step
constexpr int64_t RENORM = 16;    // renormalise Moebius products every RENORM steps (growth <~ e^{1}/step)

struct Seg {
  int64_t row;  // batch row
  int64_t t0;   // first token of the segment
  int64_t n;    // number of tokens
};

// Groups of exactly L segments with equal n (short groups are padded with copies of their last segment; the
// copies recompute and rewrite identical values, so padding is harmless).
std::vector<Seg> make_groups(const std::vector<Seg>& segs) {
  std::vector<Seg> sorted(segs);
  std::stable_sort(sorted.begin(), sorted.end(), [](const Seg& a, const Seg& b) { return a.n > b.n; });
  std::vector<Seg> out;
  size_t i = 0;
  while (i < sorted.size()) {
    size_t j = i;
    while (j < sorted.size() && j - i < static_cast<size_t>(L) && sorted[j].n == sorted[i].n) ++j;
    for (size_t l = 0; l < static_cast<size_t>(L); ++l) out.push_back(sorted[std::min(i + l, j - 1)]);
    i = j;
  }
  return out;
}

struct Plan {
  int64_t B, N, nchunk, chunk;
  std::vector<Seg> segs;    // chunk-major per row: segs[row * nchunk + c]
  std::vector<Seg> groups;  // L-padded groups
};

// Rows are split into chunks only when there are too few rows to fill the threads' lanes.
Plan make_plan(int64_t B, int64_t N, int64_t min_chunk) {
  Plan p;
  p.B = B;
  p.N = N;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t want = 4 * L * threads;  // segments wanted in flight
  int64_t nchunk = 1;
  if (B < want) nchunk = std::min<int64_t>((want + B - 1) / B, std::max<int64_t>(1, N / std::max<int64_t>(1, min_chunk)));
  nchunk = std::max<int64_t>(1, nchunk);
  p.chunk = (N + nchunk - 1) / nchunk;
  p.nchunk = (N + p.chunk - 1) / p.chunk;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < p.nchunk; ++c) {
      const int64_t t0 = c * p.chunk;
      p.segs.push_back({b, t0, std::min(p.chunk, N - t0)});
    }
  p.groups = make_groups(p.segs);
  return p;
}

template <typename F>
void for_groups(const Plan& p, const F& f) {
  const int64_t ng = static_cast<int64_t>(p.groups.size()) / L;
  at::parallel_for(0, ng, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) f(&p.groups[g * L]);
  });
}

template <typename T>
struct Cx {
  T re, im;
};

// ---------------------------------------------------------------------------------------------------------------
// Pivot (Riccati) passes. Forward: d_i = s_i - kpad[i] / d_{i-1}; reverse: e_i = s_i - kpad[i+1] / e_{i+1}.
// The state is the inverse pivot y = 1/d (or q = 1/e), since both the next step and the output need it.
// KIND 0: causal forward, out[i] = y_i.   KIND 1: bidirectional forward, saved[i].p = y_i.
// KIND 2: bidirectional reverse, saved[i].q = q_i and out[i] = G_i = 1 / (e_i - kpad[i] * p_{i-1}).
// ---------------------------------------------------------------------------------------------------------------
template <typename T, int KIND>
void pivot_pass(const Seg* g, const T* v, const T* kpad, T* out, T* saved, const Cx<T>* init, int64_t N, T c0,
                T zi) {
  const int64_t n = g[0].n;
  T yr[L], yi[L];
  const T* vp[L];
  T* op[L];
  T* sp[L];
  int64_t t0[L];
  for (int l = 0; l < L; ++l) {
    yr[l] = init ? init[l].re : T(0);
    yi[l] = init ? init[l].im : T(0);
    vp[l] = v + g[l].row * N;
    op[l] = out ? out + g[l].row * N * 2 : nullptr;
    sp[l] = saved ? saved + g[l].row * N * 4 : nullptr;
    t0[l] = g[l].t0;
  }
  for (int64_t t = 0; t < n; ++t) {
#pragma GCC unroll 8
    for (int l = 0; l < L; ++l) {
      const int64_t i = (KIND == 2) ? t0[l] + n - 1 - t : t0[l] + t;
      const T kk = (KIND == 2) ? kpad[i + 1] : kpad[i];
      const T dr = vp[l][i] + c0 - kk * yr[l];
      const T di = -zi - kk * yi[l];
      const T inv = T(1) / (dr * dr + di * di);
      yr[l] = dr * inv;
      yi[l] = -di * inv;
      if (KIND == 0) {
        op[l][2 * i] = yr[l];
        op[l][2 * i + 1] = yi[l];
      } else if (KIND == 1) {
        sp[l][4 * i] = yr[l];
        sp[l][4 * i + 1] = yi[l];
      } else {
        sp[l][4 * i + 2] = yr[l];
        sp[l][4 * i + 3] = yi[l];
        const int64_t im1 = i > 0 ? i - 1 : 0;  // kpad[0] = 0 kills the i = 0 term
        const T gr = dr - kpad[i] * sp[l][4 * im1];
        const T gi = di - kpad[i] * sp[l][4 * im1 + 1];
        const T ginv = T(1) / (gr * gr + gi * gi);
        op[l][2 * i] = gr * ginv;
        op[l][2 * i + 1] = -gi * ginv;
      }
    }
  }
}

// Moebius summary of each segment: the product P = M_last ... M_first with M_i = [[s_i, -k], [1, 0]], kept as its
// two rows (r, r_old), renormalised (projective, so exact) every RENORM steps. prod[seg] = 8 reals.
template <typename T, bool REV>
void mobius_pass(const Seg* g, const T* v, const T* kpad, T* prod, const Plan& p, T c0, T zi) {
  const int64_t n = g[0].n, N = p.N;
  // r = (a, b), r_old = (c, d): complex entries of P's rows
  T ar[L], ai[L], br[L], bi[L], cr[L], ci[L], dr_[L], di_[L];
  const T* vp[L];
  int64_t t0[L];
  for (int l = 0; l < L; ++l) {
    ar[l] = 1; ai[l] = 0; br[l] = 0; bi[l] = 0;
    cr[l] = 0; ci[l] = 0; dr_[l] = 1; di_[l] = 0;
    vp[l] = v + g[l].row * N;
    t0[l] = g[l].t0;
  }
  for (int64_t t = 0; t < n; ++t) {
#pragma GCC unroll 8
    for (int l = 0; l < L; ++l) {
      const int64_t i = REV ? t0[l] + n - 1 - t : t0[l] + t;
      const T kk = REV ? kpad[i + 1] : kpad[i];
      const T sr = vp[l][i] + c0, si = -zi;
      const T nar = sr * ar[l] - si * ai[l] - kk * cr[l];
      const T nai = sr * ai[l] + si * ar[l] - kk * ci[l];
      const T nbr = sr * br[l] - si * bi[l] - kk * dr_[l];
      const T nbi = sr * bi[l] + si * br[l] - kk * di_[l];
      cr[l] = ar[l]; ci[l] = ai[l]; dr_[l] = br[l]; di_[l] = bi[l];
      ar[l] = nar; ai[l] = nai; br[l] = nbr; bi[l] = nbi;
    }
    if ((t + 1) % RENORM == 0 || t + 1 == n) {
      for (int l = 0; l < L; ++l) {
        T m = std::max({std::abs(ar[l]), std::abs(ai[l]), std::abs(br[l]), std::abs(bi[l]), std::abs(cr[l]),
                        std::abs(ci[l]), std::abs(dr_[l]), std::abs(di_[l])});
        const T sc = T(1) / m;
        ar[l] *= sc; ai[l] *= sc; br[l] *= sc; bi[l] *= sc;
        cr[l] *= sc; ci[l] *= sc; dr_[l] *= sc; di_[l] *= sc;
      }
    }
  }
  for (int l = 0; l < L; ++l) {
    const int64_t idx = g[l].row * p.nchunk + g[l].t0 / p.chunk;
    T* q = prod + idx * 8;
    q[0] = ar[l]; q[1] = ai[l]; q[2] = br[l]; q[3] = bi[l];
    q[4] = cr[l]; q[5] = ci[l]; q[6] = dr_[l]; q[7] = di_[l];
  }
}

// Serial pass over the chunks of each row: projective carry u = (num, den), init (1, 0) ("d = infinity", so the
// first step gives d = s). The inverse pivot entering chunk c is den / num.
template <typename T, bool REV>
void mobius_carry(const Plan& p, const T* prod, Cx<T>* init) {
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T nr = 1, ni = 0, mr = 0, mi = 0;  // num, den
      for (int64_t cc = 0; cc < p.nchunk; ++cc) {
        const int64_t c = REV ? p.nchunk - 1 - cc : cc;
        const int64_t idx = b * p.nchunk + c;
        const T den2 = nr * nr + ni * ni;  // |num| >= Im z * |den| > 0 after the first chunk
        if (cc == 0) {
          init[idx] = {T(0), T(0)};
        } else {
          init[idx] = {(mr * nr + mi * ni) / den2, (mi * nr - mr * ni) / den2};
        }
        const T* q = prod + idx * 8;
        const T a_r = q[0] * nr - q[1] * ni + q[2] * mr - q[3] * mi;
        const T a_i = q[0] * ni + q[1] * nr + q[2] * mi + q[3] * mr;
        const T b_r = q[4] * nr - q[5] * ni + q[6] * mr - q[7] * mi;
        const T b_i = q[4] * ni + q[5] * nr + q[6] * mi + q[7] * mr;
        const T m = std::max({std::abs(a_r), std::abs(a_i), std::abs(b_r), std::abs(b_i)});
        nr = a_r / m; ni = a_i / m; mr = b_r / m; mi = b_i / m;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Affine (backward) passes, state x (complex). Each step: x <- alpha_i * x + beta_i.
// KIND 0 causal, reverse:        A_i = y_i^2 (kpad[i+1] A_{i+1} - w_i);  grad_i = Re A_i.
// KIND 1 bidirectional, forward: X_i = w_i + Phi_{i-1} (stored in tmp);  Phi_i = kpad[i+1] p_i^2 X_i.
// KIND 2 bidirectional, reverse: B_i = Psi_{i+1};  grad_i = -Re(G_i^2 (X_i + B_i));  Psi_i = kpad[i] q_i^2 (B_i + w_i).
// w_i = conj(g_i), g_i = dL/dRe + i dL/dIm. SUMMARY = true runs from x = 0 without stores and writes the segment's
// (prod alpha, final x) to summ (4 reals) instead.
// ---------------------------------------------------------------------------------------------------------------
template <typename T, int KIND, bool SUMMARY>
void affine_pass(const Seg* g, const T* gout, const T* out, const T* saved, const T* kpad, T* tmp, T* grad,
                 const Cx<T>* init, T* summ, const Plan& p) {
  const int64_t n = g[0].n, N = p.N;
  T xr[L], xi[L], pr[L], pi[L];
  const T* gp[L];
  const T* yp[L];
  const T* sp[L];
  T* tp[L];
  T* dp[L];
  int64_t t0[L];
  for (int l = 0; l < L; ++l) {
    xr[l] = (!SUMMARY && init) ? init[l].re : T(0);
    xi[l] = (!SUMMARY && init) ? init[l].im : T(0);
    pr[l] = 1;
    pi[l] = 0;
    gp[l] = gout + g[l].row * N * 2;
    yp[l] = out + g[l].row * N * 2;
    sp[l] = saved ? saved + g[l].row * N * 4 : nullptr;
    tp[l] = tmp ? tmp + g[l].row * N * 2 : nullptr;
    dp[l] = grad + g[l].row * N;
    t0[l] = g[l].t0;
  }
  constexpr bool REV = (KIND != 1);
  for (int64_t t = 0; t < n; ++t) {
#pragma GCC unroll 8
    for (int l = 0; l < L; ++l) {
      const int64_t i = REV ? t0[l] + n - 1 - t : t0[l] + t;
      const T wr = gp[l][2 * i], wi = -gp[l][2 * i + 1];
      if (KIND == 0) {
        const T yr = yp[l][2 * i], yi = yp[l][2 * i + 1];
        const T y2r = yr * yr - yi * yi, y2i = T(2) * yr * yi;
        const T kk = kpad[i + 1];
        // alpha = k y^2, beta = -y^2 w
        const T ar = kk * y2r, ai = kk * y2i;
        const T br = -(y2r * wr - y2i * wi), bi = -(y2r * wi + y2i * wr);
        const T nxr = ar * xr[l] - ai * xi[l] + br;
        const T nxi = ar * xi[l] + ai * xr[l] + bi;
        xr[l] = nxr;
        xi[l] = nxi;
        if (SUMMARY) {
          const T npr = ar * pr[l] - ai * pi[l], npi = ar * pi[l] + ai * pr[l];
          pr[l] = npr;
          pi[l] = npi;
        } else {
          dp[l][i] = nxr;
        }
      } else if (KIND == 1) {
        const T qr = sp[l][4 * i], qi = sp[l][4 * i + 1];  // p_i
        const T kk = kpad[i + 1];
        const T ar = kk * (qr * qr - qi * qi), ai = kk * T(2) * qr * qi;
        const T Xr = wr + xr[l], Xi = wi + xi[l];
        if (!SUMMARY) {
          tp[l][2 * i] = Xr;
          tp[l][2 * i + 1] = Xi;
        }
        xr[l] = ar * Xr - ai * Xi;
        xi[l] = ar * Xi + ai * Xr;
        if (SUMMARY) {
          const T npr = ar * pr[l] - ai * pi[l], npi = ar * pi[l] + ai * pr[l];
          pr[l] = npr;
          pi[l] = npi;
        }
      } else {
        const T qr = sp[l][4 * i + 2], qi = sp[l][4 * i + 3];  // q_i
        const T kk = kpad[i];
        const T ar = kk * (qr * qr - qi * qi), ai = kk * T(2) * qr * qi;
        if (!SUMMARY) {
          const T Gr = yp[l][2 * i], Gi = yp[l][2 * i + 1];
          const T g2r = Gr * Gr - Gi * Gi, g2i = T(2) * Gr * Gi;
          const T sr = tp[l][2 * i] + xr[l], si = tp[l][2 * i + 1] + xi[l];
          dp[l][i] = -(g2r * sr - g2i * si);
        }
        const T Br = xr[l] + wr, Bi = xi[l] + wi;
        xr[l] = ar * Br - ai * Bi;
        xi[l] = ar * Bi + ai * Br;
        if (SUMMARY) {
          const T npr = ar * pr[l] - ai * pi[l], npi = ar * pi[l] + ai * pr[l];
          pr[l] = npr;
          pi[l] = npi;
        }
      }
    }
  }
  if (SUMMARY) {
    for (int l = 0; l < L; ++l) {
      const int64_t idx = g[l].row * p.nchunk + g[l].t0 / p.chunk;
      summ[idx * 4] = pr[l];
      summ[idx * 4 + 1] = pi[l];
      summ[idx * 4 + 2] = xr[l];
      summ[idx * 4 + 3] = xi[l];
    }
  }
}

// Serial affine carry over the chunks of each row: x_in(first chunk) = 0, x_out = prod * x_in + local.
template <typename T, bool REV>
void affine_carry(const Plan& p, const T* summ, Cx<T>* init) {
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T xr = 0, xi = 0;
      for (int64_t cc = 0; cc < p.nchunk; ++cc) {
        const int64_t c = REV ? p.nchunk - 1 - cc : cc;
        const int64_t idx = b * p.nchunk + c;
        init[idx] = {xr, xi};
        const T* q = summ + idx * 4;
        const T nr = q[0] * xr - q[1] * xi + q[2];
        const T ni = q[0] * xi + q[1] * xr + q[3];
        xr = nr;
        xi = ni;
      }
    }
  });
}

template <typename T>
std::vector<Cx<T>> lane_init(const Seg* g, const std::vector<Cx<T>>& init, const Plan& p) {
  std::vector<Cx<T>> li(L);
  for (int l = 0; l < L; ++l) li[l] = init[g[l].row * p.nchunk + g[l].t0 / p.chunk];
  return li;
}

torch::Tensor make_kpad(const torch::Tensor& k, int64_t N, c10::ScalarType dt) {
  auto kpad = torch::zeros({N + 1}, torch::TensorOptions().dtype(dt));
  if (N > 1) {
    auto kk = k.to(dt).contiguous();
    if (kk.numel() == 1)
      kpad.narrow(0, 1, N - 1).fill_(kk.reshape({}));
    else
      kpad.narrow(0, 1, N - 1).copy_(kk.reshape({N - 1}));
  }
  return kpad;
}

void check_inputs(const torch::Tensor& v, const torch::Tensor& k) {
  TORCH_CHECK(v.device().is_cpu(), "bk_core_cpu: v must be a CPU tensor");
  TORCH_CHECK(v.dim() == 2, "bk_core_cpu: v must be (B, N)");
  TORCH_CHECK(v.scalar_type() == at::kFloat || v.scalar_type() == at::kDouble, "bk_core_cpu: v must be float32/64");
  const int64_t N = v.size(1);
  TORCH_CHECK(k.numel() == 1 || k.numel() == std::max<int64_t>(N - 1, 0),
              "bk_core_cpu: k must have 1 or N-1 elements");
}

}  // namespace

// Returns (out (B,N,2), saved): saved is (B,N,4) = [Re p, Im p, Re q, Im q] (inverse pivots) for bidirectional and
// an empty (B,0,4) tensor for causal, whose backward needs only out = 1/d.
std::vector<torch::Tensor> bk_core_forward(torch::Tensor v, torch::Tensor k, double z_re, double z_im, double h0,
                                           bool causal, int64_t min_chunk) {
  check_inputs(v, k);
  v = v.contiguous();
  const int64_t B = v.size(0), N = v.size(1);
  auto out = torch::empty({B, N, 2}, v.options());
  auto saved = torch::empty({B, causal ? 0 : N, 4}, v.options());
  if (B == 0 || N == 0) return {out, saved};
  auto kpad = make_kpad(k, N, v.scalar_type());
  const Plan plan = make_plan(B, N, min_chunk);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "bk_core_forward", [&] {
    using T = scalar_t;
    const T c0 = static_cast<T>(h0 - z_re), zi = static_cast<T>(z_im);
    const T* vp = v.data_ptr<T>();
    const T* kp = kpad.data_ptr<T>();
    T* op = out.data_ptr<T>();
    T* sp = causal ? nullptr : saved.data_ptr<T>();
    const int64_t nseg = static_cast<int64_t>(plan.segs.size());
    std::vector<T> prod(nseg * 8);
    std::vector<Cx<T>> init(nseg, Cx<T>{0, 0});
    // forward pivots
    if (plan.nchunk > 1) {
      for_groups(plan, [&](const Seg* g) { mobius_pass<T, false>(g, vp, kp, prod.data(), plan, c0, zi); });
      mobius_carry<T, false>(plan, prod.data(), init.data());
    }
    for_groups(plan, [&](const Seg* g) {
      auto li = lane_init<T>(g, init, plan);
      if (causal)
        pivot_pass<T, 0>(g, vp, kp, op, nullptr, li.data(), N, c0, zi);
      else
        pivot_pass<T, 1>(g, vp, kp, nullptr, sp, li.data(), N, c0, zi);
    });
    if (!causal) {
      if (plan.nchunk > 1) {
        for_groups(plan, [&](const Seg* g) { mobius_pass<T, true>(g, vp, kp, prod.data(), plan, c0, zi); });
        mobius_carry<T, true>(plan, prod.data(), init.data());
      }
      for_groups(plan, [&](const Seg* g) {
        auto li = lane_init<T>(g, init, plan);
        pivot_pass<T, 2>(g, vp, kp, op, sp, li.data(), N, c0, zi);
      });
    }
  });
  return {out, saved};
}

// Exact VJP w.r.t. v. grad_out (B,N,2) = dL/d[Re, Im]; out and saved as returned by bk_core_forward.
torch::Tensor bk_core_backward(torch::Tensor grad_out, torch::Tensor out, torch::Tensor saved, torch::Tensor k,
                               bool causal, int64_t min_chunk) {
  TORCH_CHECK(out.dim() == 3 && out.size(2) == 2, "bk_core_backward: out must be (B,N,2)");
  const int64_t B = out.size(0), N = out.size(1);
  grad_out = grad_out.to(out.scalar_type()).contiguous();
  out = out.contiguous();
  saved = saved.contiguous();
  auto grad = torch::empty({B, N}, out.options());
  if (B == 0 || N == 0) return grad;
  TORCH_CHECK(causal || (saved.size(0) == B && saved.size(1) == N && saved.size(2) == 4),
              "bk_core_backward: bidirectional mode needs saved (B,N,4)");
  auto kpad = make_kpad(k, N, out.scalar_type());
  const Plan plan = make_plan(B, N, min_chunk);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "bk_core_backward", [&] {
    using T = scalar_t;
    const T* gp = grad_out.data_ptr<T>();
    const T* yp = out.data_ptr<T>();
    const T* sp = causal ? nullptr : saved.data_ptr<T>();
    const T* kp = kpad.data_ptr<T>();
    T* dp = grad.data_ptr<T>();
    const int64_t nseg = static_cast<int64_t>(plan.segs.size());
    std::vector<T> summ(nseg * 4);
    std::vector<Cx<T>> init(nseg, Cx<T>{0, 0});
    const bool chunked = plan.nchunk > 1;
    if (causal) {
      if (chunked) {
        for_groups(plan, [&](const Seg* g) {
          affine_pass<T, 0, true>(g, gp, yp, sp, kp, nullptr, dp, nullptr, summ.data(), plan);
        });
        affine_carry<T, true>(plan, summ.data(), init.data());
      }
      for_groups(plan, [&](const Seg* g) {
        auto li = lane_init<T>(g, init, plan);
        affine_pass<T, 0, false>(g, gp, yp, sp, kp, nullptr, dp, li.data(), nullptr, plan);
      });
    } else {
      auto tmp = torch::empty({B, N, 2}, out.options());
      T* tp = tmp.data_ptr<T>();
      if (chunked) {
        for_groups(plan, [&](const Seg* g) {
          affine_pass<T, 1, true>(g, gp, yp, sp, kp, tp, dp, nullptr, summ.data(), plan);
        });
        affine_carry<T, false>(plan, summ.data(), init.data());
      }
      for_groups(plan, [&](const Seg* g) {
        auto li = lane_init<T>(g, init, plan);
        affine_pass<T, 1, false>(g, gp, yp, sp, kp, tp, dp, li.data(), nullptr, plan);
      });
      if (chunked) {
        for_groups(plan, [&](const Seg* g) {
          affine_pass<T, 2, true>(g, gp, yp, sp, kp, tp, dp, nullptr, summ.data(), plan);
        });
        affine_carry<T, true>(plan, summ.data(), init.data());
      }
      for_groups(plan, [&](const Seg* g) {
        auto li = lane_init<T>(g, init, plan);
        affine_pass<T, 2, false>(g, gp, yp, sp, kp, tp, dp, li.data(), nullptr, plan);
      });
    }
  });
  return grad;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "BK-Core CPU kernels (Riccati pivots, exact VJP)";
  m.def("forward", &bk_core_forward, "BK-Core forward: (out, saved)", py::arg("v"), py::arg("k"), py::arg("z_re"),
        py::arg("z_im"), py::arg("h0"), py::arg("causal"), py::arg("min_chunk") = 1024);
  m.def("backward", &bk_core_backward, "BK-Core exact VJP w.r.t. v", py::arg("grad_out"), py::arg("out"),
        py::arg("saved"), py::arg("k"), py::arg("causal"), py::arg("min_chunk") = 1024);
}
