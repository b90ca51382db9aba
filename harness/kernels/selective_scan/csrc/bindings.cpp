// Python bindings of the Mamba CPU kernels (selective_scan.cpp, causal_conv1d.cpp).
#include <torch/extension.h>

#include "common.h"
#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace lmbench_mamba;
  m.doc() = "Mamba CPU kernels: fused selective scan and causal depthwise conv + SiLU, with exact backwards";
  m.attr("CHUNK") = TC;
  m.def("forward", &selective_scan_forward, "selective scan forward: (out, ckpt)", py::arg("u"), py::arg("delta"),
        py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"), py::arg("z"), py::arg("delta_bias"),
        py::arg("delta_softplus"));
  m.def("backward", &selective_scan_backward,
        "selective scan backward: (du, ddelta, dz, dA_rows, dB_groups, dC_groups, dD_rows, dbias_rows)",
        py::arg("grad_out"), py::arg("u"), py::arg("delta"), py::arg("A"), py::arg("B"), py::arg("C"), py::arg("D"),
        py::arg("z"), py::arg("delta_bias"), py::arg("ckpt"), py::arg("delta_softplus"));
  m.def("conv_forward", &causal_conv1d_silu_forward, "silu(causal depthwise conv1d) forward", py::arg("x"),
        py::arg("weight_t"), py::arg("bias"));
  m.def("conv_backward", &causal_conv1d_silu_backward, "(dx, dweight_t per task, dbias per task)",
        py::arg("grad_out"), py::arg("x"), py::arg("weight_t"), py::arg("bias"));
}
