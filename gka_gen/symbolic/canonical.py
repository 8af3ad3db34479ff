"""From a spec's equations to its canonical form, by sympy algebra on explicit matrices.

Each update is evaluated on fully symbolic matrices of a small generic size (K=3, V=2:
distinct, so no accidental K==V identity can hide a mistake). From the resulting entries we
read off, and then *verify by exact expansion*, the pieces of

    X_t = (I - b k k^T) D X_{t-1} + c u w^T,        D in {I, exp(g) I, Diag(exp(g))}

and of the readout

    o = scale * Y^T ((1 - alpha) q + alpha x),   x = solve(C + Lambda, q) (ridge family)

Anything that does not verify is rejected with the term that failed.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import sympy

from ..errors import SpecError
from ..spec import Spec
from ..spec import expr as E

GENERIC_DIMS = (3, 2)  # sizes given to the spec's dims, in declaration order


@dataclass(frozen=True)
class StateForm:
    name: str
    shape: tuple[str, str]
    decay: str  # "none" | "scalar" | "channel"
    decay_gate: str | None  # log-space gate g with D = exp(g) (scalar) or Diag(exp(g))
    delta: bool  # transition carries the projection (I - b k k^T)
    beta: str | None  # unit gate multiplying the input term (and the projection)
    input: tuple[str, str]  # (u, w) of the input term c * u w^T


@dataclass(frozen=True)
class ReadoutForm:
    kind: str  # "direct" | "ridge"
    state: str  # the state read out: o = scale * state^T (...)
    query: str
    scale: str | None  # scalar param, or None for 1
    cov_state: str | None = None
    lam_rule: str | None = None  # "fro_ratio" | "channel_param"
    lam_param: str | None = None
    solver: str | None = None  # "chebyshev" | "cg" | "exact"
    iters: int | str | None = None
    mix_gate: str | None = None  # alpha in q + alpha (x - q); None means x


@dataclass(frozen=True)
class CanonicalForm:
    name: str
    family: str  # "linear" | "ridge"
    states: tuple[StateForm, ...]
    readout: ReadoutForm

    def state(self, name: str) -> StateForm:
        return next(s for s in self.states if s.name == name)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(d: dict) -> "CanonicalForm":
        states = tuple(StateForm(**{**s, "shape": tuple(s["shape"]), "input": tuple(s["input"])}) for s in d["states"])
        return CanonicalForm(d["name"], d["family"], states, ReadoutForm(**d["readout"]))


# ----------------------------------------------------------------------------- symbols


class SymbolTable:
    """Explicit sympy values for every name of a spec at concrete sizes."""

    def __init__(self, spec: Spec, sizes: dict[str, int] | None = None):
        f = spec.file
        self.spec = spec
        self.sizes = sizes or dict(zip(f.dims, GENERIC_DIMS + (4,) * len(f.dims)))
        self.values: dict[str, object] = {}
        self.scalars: dict[sympy.Symbol, str] = {}
        for name, shape in spec.shapes.items():
            if spec.kind_of(name) == "readout":
                continue
            positive = name in f.params and f.params[name].positive
            r, c = (self.size(d) for d in shape)
            if (r, c) == (1, 1):
                sym = sympy.Symbol(name, real=True, positive=positive or None)
                self.values[name] = sym
                self.scalars[sym] = name
            elif c == 1:
                self.values[name] = sympy.Matrix(r, 1, lambda i, _: sympy.Symbol(f"{name}_{i}", real=True, positive=positive or None))
            else:
                self.values[name] = sympy.Matrix(r, c, lambda i, j: sympy.Symbol(f"{name}_{i}{j}", real=True))

    def size(self, dim: str) -> int:
        return 1 if dim == "1" else self.sizes[dim]

    def vectors(self, table: str, rows: int | None = None) -> list[str]:
        names = getattr(self.spec.file, table)
        return [n for n in names if isinstance(self.values[n], sympy.MatrixBase)
                and self.values[n].cols == 1 and (rows is None or self.values[n].rows == rows)]

    def scalar_name(self, expr, *, allowed: dict) -> str | None:
        """The declared scalar ``expr`` is exactly, restricted to ``allowed``; None if it is 1."""
        expr = sympy.simplify(expr)
        if expr == 1:
            return None
        name = self.scalars.get(expr)
        if name is None or name not in allowed:
            raise ValueError(expr)
        return name


def _zero(m) -> bool:
    return all(sympy.expand(e) == 0 for e in m)


def _same(a, b) -> bool:
    return all(sympy.simplify(x - y) == 0 for x, y in zip(a, b))


# ----------------------------------------------------------------------------- updates


def _classify_update(spec: Spec, tab: SymbolTable, name: str) -> StateForm:
    f = spec.file
    fld = f"update.{name}"
    text = f.update[name]
    X = tab.values[name]
    F = E.Lowering(tab.values)(spec.update[name])
    others = {s for n in f.states if n != name for s in tab.values[n]}
    if F.free_symbols & others:
        raise SpecError(f"the update of {name} refers to another state; coupled states are not a supported form", field=fld)

    xs = list(X)
    N = F.subs({x: 0 for x in xs})
    M = (F - N).applyfunc(sympy.expand)
    for e in M:
        if e != 0 and sympy.Poly(e, *xs).total_degree() > 1:
            raise SpecError(f"{text!r} is not linear in {name}", field=fld)
    n = X.rows
    T = sympy.Matrix(n, n, lambda i, j: M.subs({x: (1 if x == X[j, 0] else 0) for x in xs})[i, 0])
    if not _zero(T * X - M):
        raise SpecError(
            f"in {text!r} the transition does not act on {name} from the left "
            f"(a term like {name} @ M or an elementwise product with {name} is not a supported form)", field=fld)

    # Decay: the transition with every input vector set to zero.
    inputs = {s: 0 for v in f.inputs for s in tab.values[v]}
    D = T.subs(inputs)
    log_gates = {g: s for g, s in f.gates.items() if s.space == "log"}
    decay, decay_gate = _classify_decay(D, tab, log_gates, text, fld, n)

    # Delta projection: T = (I - b u u^T) D.
    P = -((T - D) * D.inv()).applyfunc(sympy.simplify)
    delta_vec, delta_beta = None, None
    unit_gates = {g: s for g, s in f.gates.items() if s.space == "unit" and not s.shape}
    if not _zero(P):
        for u in tab.vectors("inputs", rows=n):
            uu = tab.values[u]
            b = sympy.simplify(P[0, 0] / uu[0] ** 2)
            if _zero((P - b * uu * uu.T).applyfunc(sympy.expand)):
                try:
                    delta_beta = tab.scalar_name(b, allowed=unit_gates) or "1"
                except ValueError:
                    raise SpecError(f"the delta-rule strength {b} is not 1 or a unit gate", field=fld) from None
                delta_vec = u
                break
        else:
            raise SpecError(
                f"in {text!r} the transition term {sympy.sstr(-(P * D)[0, 0])}... is neither a decay nor a "
                "delta-rule projection (I - b*k*k.T)", field=fld)

    # Input term: c u w^T.
    if _zero(N):
        raise SpecError(f"{text!r} has no input term (nothing is ever written to {name})", field=fld)
    for u in tab.vectors("inputs", rows=n):
        for w in tab.vectors("inputs", rows=X.cols):
            uu, ww = tab.values[u], tab.values[w]
            c = sympy.simplify(N[0, 0] / (uu[0] * ww[0]))
            if _zero((N - c * uu * ww.T).applyfunc(sympy.expand)):
                try:
                    beta = tab.scalar_name(c, allowed=unit_gates)
                except ValueError:
                    raise SpecError(f"the input coefficient {c} is not 1 or a unit gate", field=fld) from None
                break
        else:
            continue
        break
    else:
        raise SpecError(f"the input term {sympy.sstr(N[0, 0])} (entry 0,0) of {text!r} is not of the form b*u*w.T", field=fld)

    if delta_vec is not None:
        if delta_vec != u or (delta_beta if delta_beta != "1" else None) != beta:
            raise SpecError(
                f"the delta rule needs the projection and the input to share key and strength "
                f"(found ({delta_beta}, {delta_vec}) and ({beta or 1}, {u}))", field=fld)
    return StateForm(name, spec.shapes[name], decay, decay_gate, delta_vec is not None, beta, (u, w))


def _classify_decay(D, tab, log_gates, text, fld, n):
    if _zero(D - sympy.eye(n)):
        return "none", None
    off = [D[i, j] for i in range(n) for j in range(n) if i != j]
    diag = [D[i, i] for i in range(n)]
    problem = (f"the decay (diagonal {[sympy.sstr(d) for d in diag]}) in {text!r} is not I, exp(g)*I "
               "or Diag(exp(g)) for a log gate g")
    if any(sympy.simplify(e) != 0 for e in off):
        raise SpecError(problem, field=fld)
    if all(sympy.simplify(d - diag[0]) == 0 for d in diag):
        d = sympy.simplify(diag[0])
        if d.func == sympy.exp and d.args[0] in tab.scalars and tab.scalars[d.args[0]] in log_gates:
            return "scalar", tab.scalars[d.args[0]]
        raise SpecError(problem, field=fld)
    for g, gs in log_gates.items():
        gv = tab.values[g]
        if isinstance(gv, sympy.MatrixBase) and gv.rows == n and _same(diag, [sympy.exp(x) for x in gv]):
            return "channel", g
    raise SpecError(problem, field=fld)


# ----------------------------------------------------------------------------- readout


def _classify_readout(spec: Spec, tab: SymbolTable, forms: dict[str, StateForm]) -> ReadoutForm:
    f = spec.file
    solves = []

    def on_solve(A, b):
        solves.append((A, b))
        return sympy.Matrix(b.rows, 1, lambda i, _: sympy.Symbol(f"_x{len(solves)}_{i}", real=True))

    values = dict(tab.values)
    lower = E.Lowering(values, on_solve)
    for n, node in spec.readout.items():
        values[n] = lower(node)
    if len(solves) > 1:
        raise SpecError("the readout may call solve() once", field="readout")
    o = values["o"]

    # o = Y^T y for exactly one value state Y.
    for yname in f.states:
        Y = tab.values[yname]
        if Y.cols != o.rows:
            continue
        y = sympy.Matrix(Y.rows, 1, lambda i, _: sympy.diff(o[0], Y[i, 0]))
        if not _zero(y) and not (y.free_symbols & set(Y)) and _zero((o - Y.T * y).applyfunc(sympy.expand)):
            break
    else:
        raise SpecError(f"the output {f.readout['o']!r} is not (state).T @ (vector) times a scalar", field="readout.o")

    scalars = {p: s for p, s in f.params.items() if s.type == "float"}
    unit_gates = {g: s for g, s in f.gates.items() if s.space == "unit" and not s.shape}
    if not solves:
        for qn in tab.vectors("inputs", rows=y.rows):
            qv = tab.values[qn]
            c = sympy.simplify(y[0] / qv[0])
            if _zero((y - c * qv).applyfunc(sympy.expand)):
                try:
                    scale = tab.scalar_name(c, allowed=scalars)
                except ValueError:
                    raise SpecError(f"the output scale {c} is not 1 or a float param", field="readout.o") from None
                if len(f.states) != 1:
                    raise SpecError("a direct readout (no solve) supports exactly one state", field="states")
                return ReadoutForm("direct", yname, qn, scale)
        raise SpecError(f"the output reads {yname} with {y.T.tolist()}, not a scaled input vector", field="readout.o")

    A, b = solves[0]
    qname = next((q for q in tab.vectors("inputs", rows=b.rows) if _zero(b - tab.values[q])), None)
    if qname is None:
        raise SpecError("the right-hand side of solve() must be an input vector", field="readout")
    x = sympy.Matrix(b.rows, 1, lambda i, _: sympy.Symbol(f"_x1_{i}", real=True))
    qv = tab.values[qname]
    ax = sympy.simplify(sympy.diff(y[0], x[0]))
    aq = sympy.simplify(sympy.diff(y[0], qv[0]))
    if not _zero((y - aq * qv - ax * x).applyfunc(sympy.expand)) or (ax.free_symbols | aq.free_symbols) & (set(x) | set(qv)):
        raise SpecError("the vector read out must be a combination q + alpha*(x - q) of the query and the solution",
                        field="readout")
    c = sympy.simplify(aq + ax)
    try:
        scale = tab.scalar_name(c, allowed=scalars)
        mix = tab.scalar_name(sympy.simplify(ax / c), allowed=unit_gates) if c != 0 else None
    except ValueError:
        raise SpecError(f"the readout weights ({sympy.sstr(aq)}, {sympy.sstr(ax)}) are not scale*(1-alpha), "
                        "scale*alpha for a float param scale and a unit gate alpha", field="readout") from None

    # A = C + Lambda, C the covariance state.
    for cname in f.states:
        C = tab.values[cname]
        if C.shape != A.shape or cname == yname:
            continue
        Lam = (A - C).applyfunc(sympy.simplify)
        if not (Lam.free_symbols & set(C)) or all(Lam[i, j] == 0 for i in range(C.rows) for j in range(C.cols) if i != j):
            break
    else:
        raise SpecError("solve() needs (covariance state) + lambda as its matrix", field="readout")
    lam_rule, lam_param = _classify_lambda(Lam, C, tab, f, field="readout")
    cov, val = forms[cname], forms[yname]
    if cov.input[0] != cov.input[1]:
        raise SpecError(f"the covariance state {cname} must accumulate u*u.T, not {cov.input}", field=f"update.{cname}")
    for s in (cov, val):
        if s.delta or s.decay == "channel":
            raise SpecError(f"the ridge family supports scalar decay without delta rule; {s.name} has "
                            f"{'a delta rule' if s.delta else 'a per-channel decay'}", field=f"update.{s.name}")
    if cov.input[0] != val.input[0] or cov.beta != val.beta:
        raise SpecError(f"{cname} and {yname} must be written with the same key and strength", field="update")
    if len(f.states) != 2:
        raise SpecError("a ridge readout supports exactly two states (covariance and value)", field="states")
    return ReadoutForm("ridge", yname, qname, scale, cname, lam_rule, lam_param,
                       f.solver.method, f.solver.iters, mix)


def _classify_lambda(Lam, C, tab, f, *, field):
    n = C.rows
    if any(Lam[i, j] != 0 for i in range(n) for j in range(n) if i != j):
        raise SpecError(f"lambda {Lam.tolist()} is not a multiple of I or a diag() of a param", field=field)
    diag = [Lam[i, i] for i in range(n)]
    fro = sympy.sqrt(sum(e**2 for e in C))
    if all(sympy.simplify(d - diag[0]) == 0 for d in diag):
        ratio = sympy.simplify(diag[0] / fro)
        name = tab.scalars.get(ratio)
        if name in f.params and f.params[name].type == "float":
            return "fro_ratio", name
        raise SpecError(f"lambda {sympy.sstr(diag[0])} must be (float param) * fro(state) "
                        "or diag(per-channel param)", field=field)
    for p, ps in f.params.items():
        if ps.type == "head_tensor" and _same(diag, list(tab.values[p])):
            return "channel_param", p
    raise SpecError(f"lambda diag {sympy.sstr(diag)} is not a declared per-channel param", field=field)


# ----------------------------------------------------------------------------- entry


def canonicalize(spec: Spec) -> CanonicalForm:
    """The canonical form of a validated spec, or SpecError naming what failed to classify."""
    try:
        tab = SymbolTable(spec)
        forms = {n: _classify_update(spec, tab, n) for n in spec.file.states}
        readout = _classify_readout(spec, tab, forms)
    except SpecError as e:
        raise e.at(file=spec.path) from None
    family = "ridge" if readout.kind == "ridge" else "linear"
    return CanonicalForm(spec.name, family, tuple(forms[n] for n in spec.file.states), readout)


# ----------------------------------------------------------------------------- display


def describe(cf: CanonicalForm) -> str:
    """The canonical form as readable math (what `gka-gen show` prints)."""
    lines = [f"{cf.name}: {cf.family} family"]
    for s in cf.states:
        decay = {"none": "", "scalar": f"exp({s.decay_gate}_t) ", "channel": f"Diag(exp({s.decay_gate}_t)) "}[s.decay]
        b = f"{s.beta}_t " if s.beta else ""
        proj = f"(I - {b}{s.input[0]}_t {s.input[0]}_tᵀ) " if s.delta else ""
        lines.append(f"  {s.name}_t = {proj}{decay}{s.name}_(t-1) + {b}{s.input[0]}_t {s.input[1]}_tᵀ"
                     f"      [{s.shape[0]}x{s.shape[1]}; decay={s.decay}, delta={'yes' if s.delta else 'no'}]")
    r = cf.readout
    scale = f"{r.scale} · " if r.scale else ""
    if r.kind == "direct":
        lines.append(f"  o_t = {scale}{r.state}_tᵀ {r.query}_t")
    else:
        lam = (f"{r.lam_param} · ‖{r.cov_state}_t‖_F · I" if r.lam_rule == "fro_ratio" else f"Diag({r.lam_param})")
        lines.append(f"  x_t = ({r.cov_state}_t + {lam})⁻¹ {r.query}_t      [{r.solver}, {r.iters} iterations]")
        read = f"{r.query}_t + {r.mix_gate}_t (x_t - {r.query}_t)" if r.mix_gate else "x_t"
        lines.append(f"  o_t = {scale}{r.state}_tᵀ ({read})")
    return "\n".join(lines)
