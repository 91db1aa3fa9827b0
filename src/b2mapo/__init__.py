"""b2mapo: batch-by-batch multi-agent policy optimisation and its baselines, in JAX."""

__version__ = "0.1.0"
