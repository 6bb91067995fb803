"""Metrics and benchmarks that produce the tables and plots in docs/."""
