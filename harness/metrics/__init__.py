"""Measurements: perplexity (sliding window), the causality guard; later throughput, memory, FLOPs."""
