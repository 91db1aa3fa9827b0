"""Reproducing the paper's comparison: suites, their scheduling and the report."""
