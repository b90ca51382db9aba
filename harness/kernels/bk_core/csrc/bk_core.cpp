// BK-Core CPU kernels: the Riccati (LU-pivot) form of diag((H - z)^-1) for a tridiagonal H, and its exact O(N) VJP.
// See docs/bk-core.md for the math; harness/kernels/bk_core/torch_scan.py is the same contract in plain torch.
//
// Layout: v (B, N) contiguous; out (B, N, 2) = [Re, Im]; saved (B, N, 4) = [Re p, Im p, Re q, Im q] with p = 1/d and
// q = 1/e the inverse pivots (bidirectional only); kpad (N + 1) with kpad[0] = kpad[N] = 0 and kpad[i] = k_{i-1}, so
// step i of a left-to-right recursion reads kpad[i] and step i of a right-to-left one reads kpad[i + 1], branch-free
// (a uniform coupling is a stride-0 stream instead).
// Complex numbers are carried as (re, im) pairs of T (float or double).
//
// Every recursion is a serial scan along N with a long dependency chain (a division per token for the pivots), so a
// single sequence is latency-bound. Throughput comes from running L independent segments in lock-step ("lanes"; the
// lane loop is SIMD-vectorised over tiles that are transposed into lane-major buffers):
//   * B large: the segments are whole rows.
//   * B small: rows are cut into chunks. Each chunk first runs *speculatively* from the recursion's initial state
//     (y = 0 / x = 0) in parallel. Then, row by row, every chunk is re-run from the true carry (the end state of the
//     chunk before it) only until its state agrees bit for bit with the speculative state at the same token: from
//     there on the deterministic recursion reproduces the speculative values exactly. The recursions contract
//     (perturbations shrink by |k y^2| per token, ~0.25 for z = i), so this "fix-up" is a few dozen tokens per chunk;
//     if it never converges it simply re-runs the whole chunk. Either way the result is bit-identical to the
//     unchunked scan (this needs -ffp-contract=off, so vector and scalar code round identically).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int L = 16;        // lanes in lock-step (2 AVX registers of float, 4 of double: enough ILP to hide div)
constexpr int64_t TT = 32;   // tokens per transposed tile
constexpr int64_t F = 256;   // speculative states remembered per chunk for the fix-up's convergence test
constexpr int64_t kMinTokensPerTask = 1 << 16;  // parallel_for grain, in tokens

struct Seg {
  int64_t row;  // batch row
  int64_t t0;   // first token
  int64_t n;    // tokens
  int64_t id;   // row * nchunk + chunk
};

struct Plan {
  int64_t B = 0, N = 0, nchunk = 1, chunk = 0;
  std::vector<Seg> segs;    // segs[row * nchunk + c]
  std::vector<Seg> groups;  // L-padded lane groups (copies of a group's last segment rewrite identical values)
};

Plan make_plan(int64_t B, int64_t N, int64_t min_chunk) {
  Plan p;
  p.B = B;
  p.N = N;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t want = 2 * L * threads;  // lanes needed to keep every thread's lane groups full
  int64_t nchunk = 1;
  if (B < want) {
    nchunk = (want + B - 1) / B;
    nchunk = std::min<int64_t>(nchunk, std::max<int64_t>(1, N / std::max<int64_t>(1, min_chunk)));
  }
  p.chunk = (N + nchunk - 1) / nchunk;
  p.nchunk = (N + p.chunk - 1) / p.chunk;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < p.nchunk; ++c) {
      const int64_t t0 = c * p.chunk;
      p.segs.push_back({b, t0, std::min(p.chunk, N - t0), b * p.nchunk + c});
    }
  std::vector<Seg> sorted(p.segs);
  std::stable_sort(sorted.begin(), sorted.end(), [](const Seg& a, const Seg& b) { return a.n > b.n; });
  size_t i = 0;
  while (i < sorted.size()) {
    size_t j = i;
    while (j < sorted.size() && j - i < static_cast<size_t>(L) && sorted[j].n == sorted[i].n) ++j;
    for (size_t l = 0; l < static_cast<size_t>(L); ++l) p.groups.push_back(sorted[std::min(i + l, j - 1)]);
    i = j;
  }
  return p;
}

// One gathered input or scattered output stream: element (row, i) lives at base[row*row_stride + (i+off)*stride].
template <typename T>
struct Stream {
  T* base;
  int64_t row_stride;
  int64_t stride;
  int64_t off;
};

// ---------------------------------------------------------------------------------------------------------------
// The six recursions. Each has a complex state (xr, xi), NI inputs and NO outputs per token, and a direction.
// ---------------------------------------------------------------------------------------------------------------
template <typename T>
struct Consts {
  T c0;  // h0 - Re z   (s = v + c0 - i Im z)
  T zi;  // Im z
};

// Forward pivots, state y = 1/d: d_i = s_i - kpad[i] y_{i-1}. Inputs v, kpad[i]. Outputs y (to out or saved p).
struct PivotFwd {
  static constexpr int NI = 2, NO = 2;
  static constexpr bool REV = false;
  template <typename T>
  static inline void step(T& xr, T& xi, const T* in, T* o, const Consts<T>& c) {
    const T dr = in[0] + c.c0 - in[1] * xr;
    const T di = -c.zi - in[1] * xi;
    const T inv = T(1) / (dr * dr + di * di);
    xr = dr * inv;
    xi = -di * inv;
    o[0] = xr;
    o[1] = xi;
  }
};

// Backward pivots, state q = 1/e: e_i = s_i - kpad[i+1] q_{i+1}; and G_i = 1/(d_i + e_i - s_i) = 1/(e_i - kpad[i] p_{i-1}).
// Inputs v, kpad[i+1], kpad[i], Re p_{i-1}, Im p_{i-1}. Outputs q (saved), G (out).
struct PivotRev {
  static constexpr int NI = 5, NO = 4;
  static constexpr bool REV = true;
  template <typename T>
  static inline void step(T& xr, T& xi, const T* in, T* o, const Consts<T>& c) {
    const T er = in[0] + c.c0 - in[1] * xr;
    const T ei = -c.zi - in[1] * xi;
    const T inv = T(1) / (er * er + ei * ei);
    xr = er * inv;
    xi = -ei * inv;
    const T gr = er - in[2] * in[3];
    const T gi = ei - in[2] * in[4];
    const T ginv = T(1) / (gr * gr + gi * gi);
    o[0] = xr;
    o[1] = xi;
    o[2] = gr * ginv;
    o[3] = -gi * ginv;
  }
};

// Causal VJP, right to left: A_i = y_i^2 (kpad[i+1] A_{i+1} - w_i), dL/dv_i = Re A_i, w = conj(g).
// Inputs Re g, Im g, Re y, Im y, kpad[i+1]. Output dL/dv.
struct AdjCausal {
  static constexpr int NI = 5, NO = 1;
  static constexpr bool REV = true;
  template <typename T>
  static inline void step(T& xr, T& xi, const T* in, T* o, const Consts<T>&) {
    const T wr = in[0], wi = -in[1];
    const T y2r = in[2] * in[2] - in[3] * in[3], y2i = T(2) * in[2] * in[3];
    const T tr = in[4] * xr - wr, ti = in[4] * xi - wi;
    xr = y2r * tr - y2i * ti;
    xi = y2r * ti + y2i * tr;
    o[0] = xr;
  }
};

// Bidirectional VJP, left to right: X_i = w_i + Phi_{i-1} (stored), Phi_i = kpad[i+1] p_i^2 X_i  (F_i = Phi_{i-1}).
// Inputs Re g, Im g, Re p, Im p, kpad[i+1]. Outputs X.
struct AdjBidirFwd {
  static constexpr int NI = 5, NO = 2;
  static constexpr bool REV = false;
  template <typename T>
  static inline void step(T& xr, T& xi, const T* in, T* o, const Consts<T>&) {
    const T Xr = in[0] + xr, Xi = -in[1] + xi;
    const T ar = in[4] * (in[2] * in[2] - in[3] * in[3]), ai = in[4] * (T(2) * in[2] * in[3]);
    o[0] = Xr;
    o[1] = Xi;
    xr = ar * Xr - ai * Xi;
    xi = ar * Xi + ai * Xr;
  }
};

// Bidirectional VJP, right to left: B_i = Psi_{i+1} (state), dL/dv_i = -Re(G_i^2 (X_i + B_i)),
// Psi_i = kpad[i] q_i^2 (B_i + w_i). Inputs Re g, Im g, Re q, Im q, kpad[i], Re G, Im G, Re X, Im X. Output dL/dv.
struct AdjBidirRev {
  static constexpr int NI = 9, NO = 1;
  static constexpr bool REV = true;
  template <typename T>
  static inline void step(T& xr, T& xi, const T* in, T* o, const Consts<T>&) {
    const T g2r = in[5] * in[5] - in[6] * in[6], g2i = T(2) * in[5] * in[6];
    const T sr = in[7] + xr, si = in[8] + xi;
    o[0] = -(g2r * sr - g2i * si);
    const T br = xr + in[0], bi = xi - in[1];
    const T ar = in[4] * (in[2] * in[2] - in[3] * in[3]), ai = in[4] * (T(2) * in[2] * in[3]);
    xr = ar * br - ai * bi;
    xi = ar * bi + ai * br;
  }
};

template <bool REV>
inline int64_t tok(const Seg& s, int64_t t) {
  return REV ? s.t0 + s.n - 1 - t : s.t0 + t;
}

template <typename T>
inline T load(const Stream<T>& st, int64_t row, int64_t i) {
  const int64_t j = i + st.off;  // the only negative index is p_{-1} (before the first token), which is 0
  return j < 0 ? T(0) : st.base[row * st.row_stride + j * st.stride];
}

template <typename T>
inline void store(const Stream<T>& st, int64_t row, int64_t i, T x) {
  st.base[row * st.row_stride + (i + st.off) * st.stride] = x;
}

// Tile transposition: lane l's tokens tb..tb+tt-1 (in scan order) <-> buf[j * L] (buf points at lane l's column).
template <typename T, bool REV>
inline void gather(T* buf, const Stream<T>& st, const Seg& s, int64_t tb, int64_t tt) {
  const int64_t i0 = tok<REV>(s, tb) + st.off, i1 = tok<REV>(s, tb + tt - 1) + st.off;
  const T* row = st.base + s.row * st.row_stride;
  if (std::min(i0, i1) >= 0) {
    const T* p = row + i0 * st.stride;
    const int64_t step = REV ? -st.stride : st.stride;
    for (int64_t j = 0; j < tt; ++j) buf[j * L] = p[j * step];
  } else {
    for (int64_t j = 0; j < tt; ++j) buf[j * L] = load(st, s.row, tok<REV>(s, tb + j));
  }
}

template <typename T, bool REV>
inline void scatter(const T* buf, const Stream<T>& st, const Seg& s, int64_t tb, int64_t tt) {
  T* p = st.base + s.row * st.row_stride + (tok<REV>(s, tb) + st.off) * st.stride;
  const int64_t step = REV ? -st.stride : st.stride;
  for (int64_t j = 0; j < tt; ++j) p[j * step] = buf[j * L];
}

std::atomic<int64_t> g_fixup_steps{0};  // tokens re-run by the last chunked calls' fix-ups (diagnostics)

template <typename T>
inline bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// Scratch for the chunked mode: per segment, the first F speculative states and the end state.
template <typename T>
struct Spec {
  std::vector<T> states;  // [nseg][F][2]
  std::vector<T> last;    // [nseg][2]
};

// Run one lane group over its segments from init states (all zero: the recursion's true start, or the speculative
// guess for chunks c > 0), SIMD across lanes on transposed tiles.
template <typename T, typename K>
void run_group(const Seg* g, const std::array<Stream<T>, K::NI>& ins, const std::array<Stream<T>, K::NO>& outs,
               const Consts<T>& c, Spec<T>* spec) {
  const int64_t n = g[0].n;
  alignas(64) T ib[K::NI][TT][L];
  alignas(64) T ob[K::NO][TT][L];
  alignas(64) T sb[2][TT][L];
  alignas(64) T xr[L], xi[L];
  for (int l = 0; l < L; ++l) xr[l] = xi[l] = T(0);
  for (int64_t tb = 0; tb < n; tb += TT) {
    const int64_t tt = std::min(TT, n - tb);
    for (int q = 0; q < K::NI; ++q)
      for (int l = 0; l < L; ++l) gather<T, K::REV>(&ib[q][0][0] + l, ins[q], g[l], tb, tt);
    for (int64_t j = 0; j < tt; ++j) {
#pragma GCC ivdep
      for (int l = 0; l < L; ++l) {
        T in[K::NI], o[K::NO];
        for (int q = 0; q < K::NI; ++q) in[q] = ib[q][j][l];
        K::step(xr[l], xi[l], in, o, c);
        for (int q = 0; q < K::NO; ++q) ob[q][j][l] = o[q];
        sb[0][j][l] = xr[l];
        sb[1][j][l] = xi[l];
      }
    }
    for (int q = 0; q < K::NO; ++q)
      for (int l = 0; l < L; ++l) scatter<T, K::REV>(&ob[q][0][0] + l, outs[q], g[l], tb, tt);
    if (spec && tb < F) {
      for (int l = 0; l < L; ++l)
        for (int64_t j = 0; j < std::min(tt, F - tb); ++j) {
          spec->states[(g[l].id * F + tb + j) * 2] = sb[0][j][l];
          spec->states[(g[l].id * F + tb + j) * 2 + 1] = sb[1][j][l];
        }
    }
  }
  if (spec)
    for (int l = 0; l < L; ++l) {
      spec->last[g[l].id * 2] = xr[l];
      spec->last[g[l].id * 2 + 1] = xi[l];
    }
}

// Serial fix-up of every chunk after the first (in scan order) of one row, from the true carry.
template <typename T, typename K>
void fixup_row(const Plan& p, int64_t row, const std::array<Stream<T>, K::NI>& ins,
               const std::array<Stream<T>, K::NO>& outs, const Consts<T>& c, Spec<T>& spec) {
  for (int64_t cc = 1; cc < p.nchunk; ++cc) {
    const int64_t cidx = K::REV ? p.nchunk - 1 - cc : cc;
    const int64_t pidx = K::REV ? cidx + 1 : cidx - 1;
    const Seg& s = p.segs[row * p.nchunk + cidx];
    T xr = spec.last[(row * p.nchunk + pidx) * 2], xi = spec.last[(row * p.nchunk + pidx) * 2 + 1];
    int64_t t = 0;
    bool converged = false;
    for (; t < s.n; ++t) {
      const int64_t i = tok<K::REV>(s, t);
      T in[K::NI], o[K::NO];
      for (int q = 0; q < K::NI; ++q) in[q] = load(ins[q], row, i);
      K::step(xr, xi, in, o, c);
      for (int q = 0; q < K::NO; ++q) store(outs[q], row, i, o[q]);
      if (t < F && same_bits(xr, spec.states[(s.id * F + t) * 2]) &&
          same_bits(xi, spec.states[(s.id * F + t) * 2 + 1])) {
        converged = true;
        break;
      }
    }
    g_fixup_steps.fetch_add(converged ? t + 1 : t, std::memory_order_relaxed);
    if (!converged) {  // the chunk's end state changed: it is the next chunk's carry
      spec.last[s.id * 2] = xr;
      spec.last[s.id * 2 + 1] = xi;
    }
  }
}

template <typename T, typename K>
void run(const Plan& p, const std::array<Stream<T>, K::NI>& ins, const std::array<Stream<T>, K::NO>& outs,
         const Consts<T>& c) {
  const bool chunked = p.nchunk > 1;
  Spec<T> spec;
  if (chunked) {
    spec.states.assign(p.segs.size() * F * 2, T(0));
    spec.last.assign(p.segs.size() * 2, T(0));
  }
  const int64_t ng = static_cast<int64_t>(p.groups.size()) / L;
  // Small calls stay on one thread: a parallel region costs more than it saves below ~64k tokens per task, and far
  // more on an oversubscribed machine where a descheduled worker stalls the whole region.
  const int64_t tokens_per_group = L * std::max<int64_t>(1, p.groups.empty() ? 1 : p.groups[0].n);
  const int64_t grain = std::max<int64_t>(1, (kMinTokensPerTask + tokens_per_group - 1) / tokens_per_group);
  at::parallel_for(0, ng, grain, [&](int64_t g0, int64_t g1) {
    for (int64_t gi = g0; gi < g1; ++gi) run_group<T, K>(&p.groups[gi * L], ins, outs, c, chunked ? &spec : nullptr);
  });
  if (chunked) {  // a few dozen tokens per chunk (rows are only chunked when B is small): serial
    for (int64_t b = 0; b < p.B; ++b) fixup_row<T, K>(p, b, ins, outs, c, spec);
  }
}

// kpad (N + 1) with zero ends, built by hand (not with torch ops) so no intra-op parallel region is opened for a
// trivial fill. Only per-position couplings need it: a uniform coupling is read through a stride-0 stream.
template <typename T>
std::vector<T> make_kpad(const torch::Tensor& k, int64_t N) {
  std::vector<T> kpad(N + 1, T(0));
  if (N > 1) {
    auto kk = k.detach().to(torch::kCPU, c10::CppTypeToScalarType<T>::value).contiguous();
    const T* src = kk.template data_ptr<T>();
    for (int64_t i = 1; i < N; ++i) kpad[i] = src[i - 1];
  }
  return kpad;
}

// The k streams (kpad[i] and kpad[i + 1]) for either kind of coupling. The boundary entries kpad[0] and kpad[N] only
// ever multiply a zero state (y_{-1}, q_N, A_N) or p_{-1} = 0, so a uniform k may sit there too.
template <typename T>
struct KStreams {
  std::vector<T> storage;
  Stream<T> k0, k1;
  KStreams(const torch::Tensor& k, int64_t N) {
    if (k.numel() == 1 || N <= 1) {
      const T value = N > 1 ? k.detach().to(torch::kCPU, c10::CppTypeToScalarType<T>::value).template item<T>() : T(0);
      storage.assign(1, value);
      k0 = Stream<T>{storage.data(), 0, 0, 0};
      k1 = k0;
    } else {
      storage = make_kpad<T>(k, N);
      k0 = Stream<T>{storage.data(), 0, 1, 0};
      k1 = Stream<T>{storage.data(), 0, 1, 1};
    }
  }
  KStreams(const KStreams&) = delete;
};

void check_k(const torch::Tensor& k, int64_t N) {
  TORCH_CHECK(k.numel() == 1 || k.numel() == std::max<int64_t>(N - 1, 0),
              "bk_core_cpu: k must have 1 or N-1 elements, got ", k.numel(), " for N = ", N);
}

template <typename T>
Stream<T> st(T* base, int64_t row_stride, int64_t stride, int64_t comp, int64_t off = 0) {
  // component `comp` of an interleaved array is the same array shifted by comp elements
  return Stream<T>{base + comp, row_stride, stride, off};
}

}  // namespace

// (out (B,N,2), saved): saved is (B,N,4) inverse pivots for bidirectional, (B,0,4) for causal (whose backward needs
// only out = 1/d).
std::vector<torch::Tensor> bk_core_forward(torch::Tensor v, torch::Tensor k, double z_re, double z_im, double h0,
                                           bool causal, int64_t min_chunk) {
  TORCH_CHECK(v.device().is_cpu(), "bk_core_cpu: v must be a CPU tensor");
  TORCH_CHECK(v.dim() == 2, "bk_core_cpu: v must be (B, N)");
  TORCH_CHECK(v.scalar_type() == at::kFloat || v.scalar_type() == at::kDouble, "bk_core_cpu: v must be float32/64");
  v = v.contiguous();
  const int64_t B = v.size(0), N = v.size(1);
  check_k(k, N);
  auto out = torch::empty({B, N, 2}, v.options());
  auto saved = torch::empty({B, causal ? 0 : N, 4}, v.options());
  if (B == 0 || N == 0) return {out, saved};
  const Plan plan = make_plan(B, N, min_chunk);
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "bk_core_forward", [&] {
    using T = scalar_t;
    const KStreams<T> ks(k, N);
    const Consts<T> c{static_cast<T>(h0 - z_re), static_cast<T>(z_im)};
    T* vp = v.data_ptr<T>();
    T* op = out.data_ptr<T>();
    const Stream<T> sv = st(vp, N, 1, 0), k0 = ks.k0, k1 = ks.k1;
    if (causal) {
      run<T, PivotFwd>(plan, {sv, k0}, {st(op, 2 * N, 2, 0), st(op, 2 * N, 2, 1)}, c);
    } else {
      T* sp = saved.data_ptr<T>();
      run<T, PivotFwd>(plan, {sv, k0}, {st(sp, 4 * N, 4, 0), st(sp, 4 * N, 4, 1)}, c);
      run<T, PivotRev>(plan, {sv, k1, k0, st(sp, 4 * N, 4, 0, -1), st(sp, 4 * N, 4, 1, -1)},
                       {st(sp, 4 * N, 4, 2), st(sp, 4 * N, 4, 3), st(op, 2 * N, 2, 0), st(op, 2 * N, 2, 1)}, c);
    }
  });
  return {out, saved};
}

// Exact VJP w.r.t. v from grad_out (B,N,2) = dL/d[Re, Im] and the forward's (out, saved).
torch::Tensor bk_core_backward(torch::Tensor grad_out, torch::Tensor out, torch::Tensor saved, torch::Tensor k,
                               bool causal, int64_t min_chunk) {
  TORCH_CHECK(out.device().is_cpu() && out.dim() == 3 && out.size(2) == 2, "bk_core_backward: out must be (B,N,2)");
  const int64_t B = out.size(0), N = out.size(1);
  check_k(k, N);
  TORCH_CHECK(grad_out.sizes() == out.sizes(), "bk_core_backward: grad_out must match out");
  grad_out = grad_out.to(out.scalar_type()).contiguous();
  out = out.contiguous();
  saved = saved.contiguous();
  auto grad = torch::empty({B, N}, out.options());
  if (B == 0 || N == 0) return grad;
  TORCH_CHECK(causal || (saved.dim() == 3 && saved.size(0) == B && saved.size(1) == N && saved.size(2) == 4),
              "bk_core_backward: bidirectional mode needs saved of shape (B,N,4)");
  const Plan plan = make_plan(B, N, min_chunk);
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "bk_core_backward", [&] {
    using T = scalar_t;
    const KStreams<T> ks(k, N);
    const Consts<T> c{T(0), T(0)};
    T* gp = grad_out.data_ptr<T>();
    T* yp = out.data_ptr<T>();
    T* dp = grad.data_ptr<T>();
    const Stream<T> g0 = st(gp, 2 * N, 2, 0), g1 = st(gp, 2 * N, 2, 1);
    const Stream<T> y0 = st(yp, 2 * N, 2, 0), y1 = st(yp, 2 * N, 2, 1);
    const Stream<T> k0 = ks.k0, k1 = ks.k1, sd = st(dp, N, 1, 0);
    if (causal) {
      run<T, AdjCausal>(plan, {g0, g1, y0, y1, k1}, {sd}, c);
    } else {
      auto tmp = torch::empty({B, N, 2}, out.options());
      T* tp = tmp.data_ptr<T>();
      T* sp = saved.data_ptr<T>();
      const Stream<T> x0 = st(tp, 2 * N, 2, 0), x1 = st(tp, 2 * N, 2, 1);
      run<T, AdjBidirFwd>(plan, {g0, g1, st(sp, 4 * N, 4, 0), st(sp, 4 * N, 4, 1), k1}, {x0, x1}, c);
      run<T, AdjBidirRev>(plan, {g0, g1, st(sp, 4 * N, 4, 2), st(sp, 4 * N, 4, 3), k0, y0, y1, x0, x1}, {sd}, c);
    }
  });
  return grad;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "BK-Core CPU kernels (Riccati pivots, exact VJP)";
  m.attr("LANES") = L;
  m.def("fixup_steps", [](bool reset) {
    const int64_t n = g_fixup_steps.load();
    if (reset) g_fixup_steps.store(0);
    return n;
  }, "Tokens re-run by chunk fix-ups since the last reset (diagnostics)", py::arg("reset") = true);
  m.def("forward", &bk_core_forward, "BK-Core forward: (out, saved)", py::arg("v"), py::arg("k"), py::arg("z_re"),
        py::arg("z_im"), py::arg("h0"), py::arg("causal"), py::arg("min_chunk") = 512);
  m.def("backward", &bk_core_backward, "BK-Core exact VJP w.r.t. v", py::arg("grad_out"), py::arg("out"),
        py::arg("saved"), py::arg("k"), py::arg("causal"), py::arg("min_chunk") = 512);
}
