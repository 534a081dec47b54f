"""ClassifyObjects test suite."""
