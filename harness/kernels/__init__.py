"""Fused kernels used by lmbench models (each with a pure-PyTorch reference that tests compare against)."""
