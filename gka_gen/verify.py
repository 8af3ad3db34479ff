"""`gka-gen verify` / `gka-gen demo`: run every generated kernel against its spec's reference.

On a CPU machine the Triton kernels run in the Triton interpreter (small shapes); on a GPU
they run natively. The reference is the spec-derived naive recurrence in float64.
"""
from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# fp32 kernels against an fp64 reference: fp32 rounding (6e-8) amplified by O(T) chained
# state updates and, for the ridge family, by the solve's condition number (<= (1+a)/a = 51
# for a = 0.02) gives errors around 1e-5; 1e-3 leaves room without hiding real mistakes
# (a wrong mask or decay is an O(1) error).
TOL = 1e-3
# The ridge family in fp32 loses up to log10(kappa) digits in the solve (kappa <= 51) and
# readouts such as dalpha = do . U^T (x - q) cancel up to another factor kappa when U is rank
# one (T = 1: x - q is a difference of nearly equal numbers along k): 6e-8 * 51^2 ~ 2e-4 per
# step, times sqrt(30 iterations) ~ 1e-3, seen 4e-3 at T = 1. An O(1) mistake still fails.
RIDGE_TOL = 1e-2


@dataclass
class Check:
    spec: str
    case: str
    tol: float = TOL
    errors: dict[str, float] = field(default_factory=dict)
    problem: str = ""

    def add(self, name: str, err: float) -> None:
        self.errors[name] = err

    @property
    def worst(self) -> tuple[str, float]:
        if not self.errors:
            return "-", math.inf
        name = max(self.errors, key=self.errors.get)
        return name, self.errors[name]

    @property
    def ok(self) -> bool:
        return not self.problem and all(e <= self.tol for e in self.errors.values())


def _rel(a, ref) -> float:
    """max |a - ref| / max |ref|, the denominator floored at 1e-2: the tensors compared are O(1)
    (unit-norm q, k; random v, do), and some true gradients are exactly zero (dg at T=1 with no
    initial state), where a pure ratio would turn 1e-7 of rounding into a failure."""
    a, ref = a.detach().double(), ref.detach().double()
    if not bool(a.isfinite().all()):
        return math.inf
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-2))


def _flat(x):
    return list(x) if isinstance(x, (tuple, list)) else [x]


def prepare_interpreter() -> str:
    """Pick the device; on a CPU machine switch Triton to its interpreter before it is imported."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return "cpu"


def _map_tensors(args: dict, fn) -> dict:
    """``fn`` applied to every tensor argument (and to each tensor of a state tuple)."""
    import torch

    def one(v):
        if isinstance(v, torch.Tensor):
            return fn(v)
        return tuple(fn(s) for s in v) if isinstance(v, tuple) else v

    return {k: one(v) for k, v in args.items()}


def verify_spec(path: Path, *, backend: str = "triton", device: str = "cpu") -> list[Check]:
    import torch

    from .reference import reference_op
    from .spec import load_spec
    from .symbolic.canonical import canonicalize
    from .testing import make_inputs

    spec = load_spec(path)
    cf = canonicalize(spec)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    pkg = importlib.import_module(f"generated.{spec.name}")
    chunk = getattr(pkg, f"chunk_{spec.name}")
    recurrent = getattr(pkg, f"fused_recurrent_{spec.name}")
    # Ridge kernels differentiate the exact solution at their iterate (DESIGN.md); the reference
    # does the same (implicit_grad), so the comparison stays as tight as the forward's.
    ref = reference_op(spec, cf, implicit_grad=True)
    cases = {  # small enough for the Triton interpreter; T=70 is not a multiple of the chunk
        "T=70 ragged, h0": dict(B=2, T=70, initial_state=True),
        "T=1": dict(B=1, T=1),
        "varlen [0,5,40,70]": dict(B=1, T=70, cu_seqlens=[0, 5, 40, 70], initial_state=True),
        "extreme gates": dict(B=1, T=70, extreme=True, initial_state=True),
    }
    checks = []
    for case, kw in cases.items():
        check = Check(spec.name, case, tol=RIDGE_TOL if cf.family == "ridge" else TOL)
        checks.append(check)
        try:
            args = make_inputs(spec, H=2, K=32, V=48, seed=len(checks), requires_grad=True, **kw)
            args64 = _map_tensors(args, lambda v: v.detach().double().requires_grad_(True) if v.is_floating_point() else v)
            dev = _map_tensors(args, lambda v: v.to(device))
            o, final = chunk(**dev, output_final_state=True, backend=backend)
            ro, rfinal = ref(**args64, output_final_state=True)
            check.add("o", _rel(o.cpu(), ro))
            for i, (a, r) in enumerate(zip(_flat(final), _flat(rfinal))):
                check.add(f"state{i}", _rel(a.cpu(), r))
            ro2, _ = recurrent(**dev, output_final_state=True, backend=backend)
            check.add("recurrent o", _rel(ro2.cpu(), ro))
            do = torch.randn_like(ro)
            dht = [torch.randn_like(s) for s in _flat(rfinal)]
            names = [k for k, v in args.items() if k != "initial_state" and isinstance(v, torch.Tensor) and v.is_floating_point()]
            n_states = len(_flat(args["initial_state"])) if "initial_state" in args else 0
            leaves = [dev[k] for k in names] + (_flat(dev["initial_state"]) if n_states else [])
            rleaves = [args64[k] for k in names] + (_flat(args64["initial_state"]) if n_states else [])
            labels = names + [f"h0[{i}]" for i in range(n_states)]
            got = torch.autograd.grad([o, *_flat(final)], leaves,
                                      [do.to(device).to(o.dtype), *[d.to(device).float() for d in dht]], allow_unused=True)
            want = torch.autograd.grad([ro, *_flat(rfinal)], rleaves, [do, *dht], allow_unused=True)
            for label, a, r in zip(labels, got, want):
                if r is None:
                    continue
                check.add(f"d{label}", math.inf if a is None else _rel(a.cpu(), r))
        except Exception as e:  # noqa: BLE001 - a report row, not a crash
            check.problem = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return checks


def print_report(checks: list[Check]) -> bool:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generated kernels vs spec reference (fp64); pass: max rel err <= {TOL:g} "
                        f"(ridge family {RIDGE_TOL:g})")
    for col in ("spec", "case", "worst tensor", "its error", "result"):
        table.add_column(col)
    for c in checks:
        name, err = c.worst
        table.add_row(c.spec, c.case, c.problem or name, f"{err:.1e}" if c.errors else "-",
                      "[green]pass[/]" if c.ok else "[red]FAIL[/]")
    Console().print(table)
    return all(c.ok for c in checks)


def verify_all(paths, *, backend: str = "triton", echo=print) -> bool:
    """Verify every spec in ``paths`` and print one table; True when all pass."""
    device = prepare_interpreter()
    checks = []
    for p in paths:
        echo(f"verifying {p} ({backend} on {device}) ...")
        checks += verify_spec(p, backend=backend, device=device)
    return print_report(checks)
