"""Data files in the interchange format: reading, writing and the synthetic world."""
