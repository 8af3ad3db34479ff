"""gka-gen: a compiler from YAML recurrence specs to verified GPU kernels."""
__version__ = "0.1.0"
