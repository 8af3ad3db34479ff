"""A variant to compare: its spec, and the generated package's op, layer and reference."""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError
from ..spec import Spec, load_spec

ROOT = Path(__file__).resolve().parents[2]


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
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        pkg = importlib.import_module(f"generated.{spec.name}")
    except ModuleNotFoundError:
        raise SpecError(f"no generated package generated/{spec.name}; run `gka-gen generate`",
                        file=str(path), field="name") from None
    if pkg.spec.SPEC_HASH != spec.hash:
        # Comparing a stale package would report numbers of some other recurrence.
        raise SpecError(f"generated/{spec.name} was generated from another version of this spec; "
                        "run `gka-gen generate`", file=str(path))
    return Variant(spec=spec, family=pkg.spec.canonical_form().family, package=pkg)
