"""`adcast bench …`: benchmarks that print figures (and JSON), never pass/fail thresholds."""
