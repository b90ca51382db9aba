"""lmbench's library: models, kernels, data, training, metrics and reporting (no pytest imports here)."""
__version__ = "0.1.0"
