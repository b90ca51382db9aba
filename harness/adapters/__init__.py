"""Bridges to other evaluation tools (``lm_eval``: lm-evaluation-harness; imported only on request)."""
