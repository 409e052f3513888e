"""Backtests through the live path: file sources (CSV/ZIP, recordings), simulated execution, metrics."""
