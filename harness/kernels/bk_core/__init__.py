"""BK-Core: the diagonal of the resolvent of a tridiagonal Hamiltonian, as a fused, differentiable torch op.

``bk_core`` is the fast op (C++ on CPU, Triton on CUDA, exact O(N) backward, registered as
``torch.ops.lmbench.bk_core_fwd`` / ``bk_core_bwd``); ``bk_core_reference`` is the pure-PyTorch float64 loop it is
tested against. See docs/bk-core.md.
"""
from .op import FLOPS_PER_TOKEN, bk_core, bk_core_flops, cpu_backend
from .reference import bk_core_reference, dense_resolvent_diag

__all__ = ["bk_core", "bk_core_reference", "dense_resolvent_diag", "bk_core_flops", "FLOPS_PER_TOKEN",
           "cpu_backend"]
