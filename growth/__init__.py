"""Growth-based density discovery in sparse neural networks (PWMPR and its baselines)."""

__version__ = "0.1.0"
