"""Exact reference values of a spec, by unrolling its own equations on exact sympy numbers.

Nothing here is written per variant: every step evaluates the spec's parsed update
expressions (``spec.update``) and then its readout statements (``spec.readout``, in order)
with `expr.Lowering` on explicit sympy matrices of rationals. So the reference is the spec,
and any kernel that matches it implements what the user wrote.

Exactness: inputs are rationals; a log-space gate is stored as ``g = log(r)`` with a
rational ``r`` so that ``exp(g)`` evaluates to ``r`` exactly; ``fro(H)`` is an exact square
root and ``solve`` is an exact LU solve whose entries are brought to the canonical form
``a + b*sqrt(s)`` (so checks like ``(H + lam I) x == q`` are decided exactly).

The float side (`RationalInputs.to_numpy` / `to_torch`, `result_to_numpy`) uses the
functional API's layout with B = 1, H = 1: inputs ``[B, T, H, K]``, gates ``[B, T, H]`` or
``[B, T, H, K]``, head-tensor params ``[H, *shape]``, states ``[N, H, *shape]`` (a tuple in
spec state order when there are several).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import sympy

from ..spec import Spec
from ..spec import expr as E

# ----------------------------------------------------------------------------- inputs


@dataclass
class RationalInputs:
    """Exact inputs of one sequence (B = 1, H = 1).

    tokens: per-token values of the inputs and gates, ``name -> [value_t]`` with column
        ``sympy.Matrix`` for vectors and sympy scalars otherwise (log gates as ``log(r)``).
    ratios: for log-space gates, the exact ``r_t = exp(g_t)`` (same layout as tokens).
    params: call-time params as sympy rationals / column matrices, ints for int params.
    initial_state: ``state name -> sympy.Matrix`` or None (zero state).
    """

    spec_name: str
    sizes: dict[str, int]
    T: int
    tokens: dict[str, list]
    ratios: dict[str, list]
    params: dict[str, object]
    initial_state: dict[str, sympy.Matrix] | None = None
    state_order: tuple[str, ...] = field(default=())

    def to_numpy(self) -> dict:
        """fla-style keyword arguments as float64 numpy arrays (B = 1, H = 1)."""
        out: dict = {}
        for name, seq in self.tokens.items():
            if name in self.ratios:  # log gate: float(log(r)) from the exact r, no sympy.log detour
                arr = np.array([_log_float(r) for r in self.ratios[name]], dtype=np.float64)
            else:
                arr = np.array([_to_float_array(v) for v in seq], dtype=np.float64)
            out[name] = arr.reshape(1, self.T, 1, *arr.shape[1:])
        for name, p in self.params.items():
            if isinstance(p, sympy.MatrixBase):
                out[name] = _to_float_array(p).reshape(1, -1)  # head tensor [H, *shape]
            elif isinstance(p, int):
                out[name] = p
            else:
                out[name] = float(p)
        out["initial_state"] = None
        if self.initial_state is not None:
            states = [_to_float_array(self.initial_state[n])[None, None] for n in self.state_order]
            out["initial_state"] = states[0] if len(states) == 1 else tuple(states)
        out["output_final_state"] = True
        return out

    def to_torch(self, dtype=None) -> dict:
        """Like `to_numpy`, as torch tensors (float64 unless ``dtype`` says otherwise)."""
        import torch

        dtype = dtype or torch.float64

        def conv(x):
            if isinstance(x, np.ndarray):
                return torch.tensor(x, dtype=dtype)
            if isinstance(x, tuple):
                return tuple(conv(y) for y in x)
            return x

        return {k: conv(v) for k, v in self.to_numpy().items()}


def _log_float(r):
    return np.log(_to_float_array(r))


def _to_float_array(v) -> np.ndarray | float:
    if isinstance(v, sympy.MatrixBase):
        flat = np.array([_num(e) for e in v], dtype=np.float64)
        return flat if v.cols == 1 else flat.reshape(v.rows, v.cols)
    return _num(v)


def _num(e) -> float:
    # Exact irrationals (sqrt) are evaluated with extra digits, then rounded once.
    return float(sympy.N(e, 30)) if isinstance(e, sympy.Basic) else float(e)


def _rat(rng: random.Random, lo: Fraction, hi: Fraction, dens=(2, 3, 4, 5, 8)) -> sympy.Rational:
    d = rng.choice(dens)
    n = rng.randint(int(np.ceil(lo * d)), int(np.floor(hi * d)))
    return sympy.Rational(n, d)


def _unit_vector(rng: random.Random, n: int) -> sympy.Matrix:
    """A rational vector of exact unit norm (inverse stereographic projection of a rational point)."""
    t = [_rat(rng, Fraction(-3, 2), Fraction(3, 2)) for _ in range(n - 1)]
    s = sum(x**2 for x in t)
    return sympy.Matrix([2 * x / (s + 1) for x in t] + [(s - 1) / (s + 1)])


def random_rational_inputs(
    spec: Spec, sizes: dict[str, int], T: int, seed: int = 0, *, initial_state: bool = False
) -> RationalInputs:
    """Random exact inputs for ``spec`` at dims ``sizes`` (e.g. {"K": 3, "V": 2}) and length T.

    Every gate is given, optional ones included (so a float reference sees the same values).
    l2-normed inputs are exact unit vectors; other inputs are small rationals in [-1, 1].
    Log gates: g = log(r), r rational in (0, 1]; unit gates rational in [0, 1].
    """
    rng = random.Random(seed)
    f = spec.file

    def dim(d):
        return sizes[d]

    tokens: dict[str, list] = {}
    ratios: dict[str, list] = {}
    for name, s in f.inputs.items():
        n = dim(s.shape[0])
        if s.norm == "l2":
            tokens[name] = [_unit_vector(rng, n) for _ in range(T)]
        else:
            tokens[name] = [sympy.Matrix([_rat(rng, Fraction(-1), Fraction(1)) for _ in range(n)]) for _ in range(T)]
    for name, g in f.gates.items():
        n = dim(g.shape[0]) if g.shape else None

        def draw():
            if g.space == "log":
                return _rat(rng, Fraction(1, 2), Fraction(1), dens=(2, 3, 4, 5, 8))  # r in [1/2, 1]
            return _rat(rng, Fraction(0), Fraction(1))

        vals = [sympy.Matrix([draw() for _ in range(n)]) if n else draw() for _ in range(T)]
        if g.space == "log":
            ratios[name] = vals
            tokens[name] = [v.applyfunc(sympy.log) if n else sympy.log(v) for v in vals]
        else:
            tokens[name] = vals
    params: dict[str, object] = {}
    for name, p in f.params.items():
        if p.type == "int":
            params[name] = p.default if isinstance(p.default, int) else rng.randint(1, 8)
        elif p.type == "head_tensor":
            n = dim(p.shape[0])
            params[name] = sympy.Matrix([_rat(rng, Fraction(1, 4), Fraction(2)) for _ in range(n)])
        elif name == "ridge_ratio" or p.positive:
            params[name] = _rat(rng, Fraction(1, 50), Fraction(1, 2), dens=(10, 20, 50))
        else:
            params[name] = _rat(rng, Fraction(1, 4), Fraction(1), dens=(2, 4, 8))
    init = None
    if initial_state:
        init = {}
        for name, st in f.states.items():
            r, c = dim(st.shape[0]), dim(st.shape[1])
            M = sympy.Matrix(r, c, lambda i, j: _rat(rng, Fraction(-1, 2), Fraction(1, 2)))
            init[name] = M * M.T if r == c and st.shape[0] == st.shape[1] else M  # a covariance must be PSD
    return RationalInputs(spec.name, dict(sizes), T, tokens, ratios, params, init, tuple(f.states))


# ----------------------------------------------------------------------------- unrolling


def exact_solve(A: sympy.Matrix, b: sympy.Matrix) -> sympy.Matrix:
    """A^{-1} b exactly; entries simplified to a canonical radical form (a + b*sqrt(s))."""
    x = A.LUsolve(b)
    return x.applyfunc(canonical_number)


def canonical_number(e):
    """Canonical form of an exact number built from rationals and square roots."""
    if isinstance(e, sympy.Rational):
        return e
    return sympy.expand(sympy.radsimp(sympy.cancel(e)))


def _default_params(spec: Spec, sizes: dict[str, int]) -> dict:
    """Exact defaults of the params that have one (``K**-0.5`` stays an exact sqrt)."""
    dims = {d: sympy.Integer(v) for d, v in sizes.items()}
    out = {}
    for name, p in spec.file.params.items():
        if p.default is None or p.type == "head_tensor":
            continue
        if p.type == "int":
            out[name] = int(p.default)
        elif isinstance(p.default, str):
            out[name] = E.Lowering(dims)(E.parse_expr(p.default, field=f"params.{name}.default"))
        else:
            fr = Fraction(p.default).limit_denominator(10**9)
            out[name] = sympy.Rational(fr.numerator, fr.denominator)
    return out


def _as_sympy(v):
    if isinstance(v, (sympy.Basic, sympy.MatrixBase)):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return sympy.Matrix([sympy.nsimplify(x, rational=True) if isinstance(x, float) else sympy.sympify(x)
                             for x in np.asarray(v).reshape(-1).tolist()])
    if isinstance(v, Fraction):
        return sympy.Rational(v.numerator, v.denominator)
    return sympy.sympify(v)


def symbolic_reference(
    spec: Spec,
    inputs: RationalInputs | dict,
    *,
    sizes: dict[str, int],
    T: int,
    initial_state=None,
    solve=exact_solve,
) -> dict:
    """Unroll ``spec`` for T tokens on exact values.

    inputs: a `RationalInputs`, or a dict with per-token sequences (length T) for inputs and
        gates and plain values for params. Missing optional gates take their spec default
        (a number, or another gate); missing params take their spec default, exactly.
    initial_state: dict ``state -> Matrix``, a tuple in spec state order, a single Matrix
        (one state), or None: then ``inputs.initial_state`` if any, else zeros.
    solve: ``solve(A, b)`` used by the readout's ``solve`` (default: exact LU solve).

    Returns ``{"o": [V x 1 Matrix per token], "final_state": {state: Matrix},
    "steps": [{name: value} per token: the states after the update and every readout value]}``.
    """
    f = spec.file
    if isinstance(inputs, RationalInputs):
        tokens, params = inputs.tokens, inputs.params
        if initial_state is None:
            initial_state = inputs.initial_state
    else:
        per_token = set(f.inputs) | set(f.gates)
        tokens = {n: [_as_sympy(x) for x in v] for n, v in inputs.items() if n in per_token}
        params = {n: (v if isinstance(v, int) and f.params[n].type == "int" else _as_sympy(v))
                  for n, v in inputs.items() if n in f.params}
    tokens = dict(tokens)
    for name in f.inputs:
        if name not in tokens:
            raise ValueError(f"missing input {name!r}")
        if len(tokens[name]) != T:
            raise ValueError(f"input {name!r} has {len(tokens[name])} tokens, expected T={T}")
    _fill_gate_defaults(spec, tokens, sizes, T)
    params = {**_default_params(spec, sizes), **params}
    missing = [p for p in f.params if p not in params]
    if missing:
        raise ValueError(f"missing params without default: {missing}")

    states = _initial_states(spec, sizes, initial_state)
    outs, steps = [], []
    for t in range(T):
        env = {**params, **{n: tokens[n][t] for n in tokens}}
        # All updates read the *previous* states (a simultaneous update, as in the equations).
        env.update(states)
        new = {n: E.Lowering(env)(spec.update[n]).applyfunc(sympy.expand) for n in f.states}
        states = new
        env.update(states)
        step = dict(states)
        lowering = E.Lowering(env, on_solve=solve)
        for name, node in spec.readout.items():
            val = lowering(node)
            val = val.applyfunc(canonical_number) if isinstance(val, sympy.MatrixBase) else canonical_number(val)
            env[name] = val
            step[name] = val
        steps.append(step)
        outs.append(step["o"])
    return {"o": outs, "final_state": dict(states), "steps": steps}


def _fill_gate_defaults(spec: Spec, tokens: dict, sizes: dict, T: int) -> None:
    f = spec.file
    pending = [n for n in f.gates if n not in tokens]
    for _ in range(len(pending) + 1):  # defaults may name another (possibly defaulted) gate
        for name in list(pending):
            g = f.gates[name]
            if not g.optional:
                raise ValueError(f"missing required gate {name!r}")
            if isinstance(g.default, str):
                if g.default not in tokens:
                    continue
                tokens[name] = list(tokens[g.default])
            else:
                fr = Fraction(g.default).limit_denominator(10**9)
                val = sympy.Rational(fr.numerator, fr.denominator)
                n = sizes[g.shape[0]] if g.shape else None
                tokens[name] = [sympy.Matrix([val] * n) if n else val for _ in range(T)]
            pending.remove(name)
    if pending:
        raise ValueError(f"cannot resolve defaults of gates {pending}")


def _initial_states(spec: Spec, sizes: dict, initial_state) -> dict:
    f = spec.file
    shapes = {n: (sizes[s.shape[0]], sizes[s.shape[1]]) for n, s in f.states.items()}
    if initial_state is None:
        return {n: sympy.zeros(*shp) for n, shp in shapes.items()}
    if isinstance(initial_state, sympy.MatrixBase):
        initial_state = (initial_state,)
    if isinstance(initial_state, (tuple, list)):
        initial_state = dict(zip(f.states, initial_state))
    out = {}
    for n, shp in shapes.items():
        m = sympy.Matrix(initial_state[n])
        if m.shape != shp:
            raise ValueError(f"initial state {n} has shape {m.shape}, expected {shp}")
        out[n] = m
    return out


# ----------------------------------------------------------------------------- float views


def result_to_numpy(spec: Spec, result: dict) -> tuple[np.ndarray, object]:
    """(o [1, T, 1, V], final state [1, 1, *shape] or a tuple in spec state order), float64."""
    o = np.stack([_to_float_array(v) for v in result["o"]]).reshape(1, len(result["o"]), 1, -1)
    finals = [_to_float_array(result["final_state"][n])[None, None] for n in spec.file.states]
    return o, (finals[0] if len(finals) == 1 else tuple(finals))


def result_to_torch(spec: Spec, result: dict, dtype=None):
    """`result_to_numpy` as float64 torch tensors."""
    import torch

    dtype = dtype or torch.float64
    o, st = result_to_numpy(spec, result)
    conv = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    return conv(o), (tuple(conv(s) for s in st) if isinstance(st, tuple) else conv(st))
