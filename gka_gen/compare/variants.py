"""A variant to compare: its spec, and the generated package's op, layer and reference."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..codegen.generate import import_generated
from ..spec import Spec, load_spec


@dataclass
class Variant:
    spec: Spec
    family: str  # "linear" | "ridge"
    package: object  # generated.<name>

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def title(self) -> str:
        return self.spec.file.title or self.name

    @property
    def chunk(self):
        return getattr(self.package, f"chunk_{self.name}")

    @property
    def layer_cls(self):
        return getattr(self.package, self.spec.file.layer.class_name)

    def reference(self):
        """The spec-derived recurrent reference; ridge gradients are the exact solution's at the
        iterate (implicit), which is what the kernels compute (DESIGN.md)."""
        from ..reference import reference_op

        return reference_op(self.package.spec.load_spec(), self.package.spec.canonical_form(), implicit_grad=True)


def load_variant(path: str | Path) -> Variant:
    """The spec at ``path`` and its generated package, which must be up to date with it."""
    spec = load_spec(path)
    pkg = import_generated(spec, path)
    return Variant(spec=spec, family=pkg.spec.canonical_form().family, package=pkg)
