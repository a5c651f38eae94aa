"""Benchmarks: what the runtime costs and how well it holds a conversation."""
