"""The training pipeline: windows, schedule, generation, gate, checkpoints, results (spec §TRNG)."""
