"""Launchers: how cells are spread over processes and devices (xdist workers today; Ray and resume later)."""
