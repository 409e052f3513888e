"""Shared by every engine process: record layouts, atomics, clock, wait strategies, shared memory, the ring,
the control block, per-process start-up, configuration and latency histograms."""
