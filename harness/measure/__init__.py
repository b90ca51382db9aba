"""Measurements: each takes a provisioned model (or a kernel) and returns a ``Result``; none writes records."""
