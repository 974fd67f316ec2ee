"""Measurement: events, continuations, the metric registry and the batched measurement of every pass (the first thing the data goes through)."""
