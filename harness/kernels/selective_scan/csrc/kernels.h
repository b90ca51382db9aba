// Entry points of the Mamba CPU extension (bound to Python in bindings.cpp).
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace lmbench_mamba {

// selective_scan.cpp: (out, ckpt) and (du, ddelta, dz, dA_rows, dB_groups, dC_groups, dD_rows, dbias_rows).
std::vector<at::Tensor> selective_scan_forward(at::Tensor u, at::Tensor delta, at::Tensor A, at::Tensor B,
                                               at::Tensor C, at::Tensor Dv, c10::optional<at::Tensor> z,
                                               at::Tensor bias, bool softplus);
std::vector<at::Tensor> selective_scan_backward(at::Tensor gout, at::Tensor u, at::Tensor delta, at::Tensor A,
                                                at::Tensor B, at::Tensor C, at::Tensor Dv,
                                                c10::optional<at::Tensor> z, at::Tensor bias, at::Tensor ckpt,
                                                bool softplus);

// causal_conv1d.cpp: out, and (dx, dweight_tasks, dbias_tasks).
at::Tensor causal_conv1d_silu_forward(at::Tensor x, at::Tensor weight_t, at::Tensor bias);
std::vector<at::Tensor> causal_conv1d_silu_backward(at::Tensor gout, at::Tensor x, at::Tensor weight_t,
                                                    at::Tensor bias);

}  // namespace lmbench_mamba
