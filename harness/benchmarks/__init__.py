"""Measurement procedures, one module per benchmark; the pytest tests in ``benches/`` call these and assert."""
