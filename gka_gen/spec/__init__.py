"""Spec files: safe YAML, the expression language, validation."""
from .loader import Spec, default_value, load_spec, spec_from_dict

__all__ = ["Spec", "load_spec", "spec_from_dict", "default_value"]
