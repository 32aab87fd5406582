"""Experiments: side-by-side comparisons, tidy result tables, the results store."""
