"""Statistics: separation, horizons, the registered confirmatory test and incremental value (what the measured arrays go through next)."""
