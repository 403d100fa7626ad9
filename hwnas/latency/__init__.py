"""Latency models: profiles on disk, lookup tables, learned predictors, metrics, the latency loss."""
