"""`gka-gen compare`: the variants side by side on speed, numerics and recall (MQAR).

Not imported by the compiler core; torch is imported only here and below.
"""
from .run import compare

__all__ = ["compare"]
