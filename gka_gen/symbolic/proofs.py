"""Symbolic proofs that the chunked lowering rules are exact (no floating point anywhere).

Each proof builds a small fully symbolic case (symbolic keys, values, gates, initial
state), computes the quantity once by the step-by-step recurrence and once by the chunked
rule the IR lowers to, and checks that the difference is identically zero as a polynomial
or rational function. Decays enter as positive symbols a_t = exp(g_t), so that
exp(G_i - G_j) (G the in-chunk cumsum of g) is the product a_{j+1} ... a_i and everything
stays polynomial or rational.

Every rule function takes ``mutation=None``: a named, deliberately wrong variant (dropped
decay, wrong causal mask, dropped term). The tests run each proof with a mutation and
expect it to FAIL, so a proof that passes is known to be able to fail.

Run ``python -m gka_gen.symbolic.proofs`` for a summary.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import reduce

import sympy

# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ProofResult:
    name: str
    statement: str
    passed: bool
    detail: str
    seconds: float = 0.0

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] {self.name} ({self.seconds:.1f}s): {self.detail}"


def _timed(name: str, statement: str, check) -> ProofResult:
    t0 = time.perf_counter()
    passed, detail = check()
    return ProofResult(name, statement, bool(passed), detail, time.perf_counter() - t0)


def _is_zero(e) -> bool:
    """Exact zero test of a polynomial or rational function (numerator expands to 0)."""
    e = sympy.expand(e)
    if e == 0:
        return True
    num, _ = sympy.fraction(sympy.together(e))
    return sympy.expand(num) == 0


def _first_nonzero(pairs) -> str | None:
    """None if every (label, expr) is zero, else the label of the first one that is not."""
    for label, e in pairs:
        if not _is_zero(e):
            return label
    return None


def _entries(label: str, M: sympy.Matrix):
    return [(f"{label}[{i},{j}]", M[i, j]) for i in range(M.rows) for j in range(M.cols)]


# ----------------------------------------------------------------------------- symbols


def _vec(name: str, n: int, **kw) -> sympy.Matrix:
    return sympy.Matrix(n, 1, lambda i, _: sympy.Symbol(f"{name}{i}", real=True, **kw))


def _mat(name: str, r: int, c: int) -> sympy.Matrix:
    return sympy.Matrix(r, c, lambda i, j: sympy.Symbol(f"{name}{i}{j}", real=True))


def _gates(decay: str, C: int, K: int) -> list[sympy.Matrix]:
    """Per-token decay a_t as a K-vector (all ones for no decay, repeated for scalar)."""
    if decay == "none":
        return [sympy.ones(K, 1) for _ in range(C)]
    if decay == "scalar":
        return [sympy.ones(K, 1) * sympy.Symbol(f"a{t}", positive=True) for t in range(C)]
    if decay == "channel":
        return [_vec(f"a{t}_", K, positive=True) for t in range(C)]
    raise ValueError(decay)


def _prod(vs: list[sympy.Matrix], K: int) -> sympy.Matrix:
    return reduce(lambda x, y: x.multiply_elementwise(y), vs, sympy.ones(K, 1))


def _eG(a: list[sympy.Matrix], i: int, K: int) -> sympy.Matrix:
    """exp(G_i) = a_0 ... a_i (G_i the in-chunk cumsum of g, token i included)."""
    return _prod(a[: i + 1], K)


def _eGG(a: list[sympy.Matrix], i: int, j: int, K: int) -> sympy.Matrix:
    """exp(G_i - G_j) = a_{j+1} ... a_i for j <= i."""
    return _prod(a[j + 1 : i + 1], K)


def _had(x: sympy.Matrix, y: sympy.Matrix) -> sympy.Matrix:
    return x.multiply_elementwise(y)


@dataclass
class _Chunk:
    K: int
    V: int
    C: int
    decay: str
    q: list
    k: list
    v: list
    beta: list
    a: list
    S0: sympy.Matrix


def _chunk(decay: str, K: int, V: int, C: int, *, beta: bool = True) -> _Chunk:
    return _Chunk(
        K, V, C, decay,
        q=[_vec(f"q{t}_", K) for t in range(C)],
        k=[_vec(f"k{t}_", K) for t in range(C)],
        v=[_vec(f"v{t}_", V) for t in range(C)],
        beta=[sympy.Symbol(f"b{t}", real=True) if beta else sympy.Integer(1) for t in range(C)],
        a=_gates(decay, C, K),
        S0=_mat("S", K, V),
    )


# ----------------------------------------------------------------------------- 1. WY / UT


def delta_recurrence(c: _Chunk):
    """Step by step: S_t = (I - b_t k_t k_t^T) Diag(a_t) S_{t-1} + b_t k_t v_t^T, o_t = S_t^T q_t."""
    S, outs = c.S0, []
    I = sympy.eye(c.K)
    for t in range(c.C):
        k, b = c.k[t], c.beta[t]
        S = (I - b * k * k.T) * sympy.diag(*c.a[t]) * S + b * k * c.v[t].T
        outs.append(S.T * c.q[t])
    return S, outs


def wy_chunk(c: _Chunk, mutation: str | None = None):
    """The WY / UT-transform chunk form the IR lowers the delta family to.

    A_ij = b_i <k_i * e^{G_i-G_j}, k_j> (i > j), T = (I + A)^{-1}, W = T (b * K * e^G),
    U = T (b * V), v_new = U - W S0, S_end = e^{G_last} * S0 + sum_j (k_j * e^{G_last-G_j}) v_new_j^T,
    o_i = (q_i * e^{G_i})^T S0 + sum_{j<=i} <q_i * e^{G_i-G_j}, k_j> v_new_j.
    Mutations: "A_no_decay", "W_no_decay", "out_strict_mask", "state_no_decay".
    """
    K, C, a = c.K, c.C, c.a
    A = sympy.zeros(C, C)
    for i in range(C):
        for j in range(i):
            dec = sympy.ones(K, 1) if mutation == "A_no_decay" else _eGG(a, i, j, K)
            A[i, j] = c.beta[i] * (_had(c.k[i], dec).T * c.k[j])[0]
    # I + A is unit lower triangular: its inverse is a polynomial (forward substitution).
    Tm = (sympy.eye(C) + A).inv(method="LU").applyfunc(sympy.expand)
    Kb = sympy.Matrix.vstack(*[
        (c.beta[i] * (c.k[i] if mutation == "W_no_decay" else _had(c.k[i], _eG(a, i, K)))).T for i in range(C)])
    Vb = sympy.Matrix.vstack(*[(c.beta[i] * c.v[i]).T for i in range(C)])
    W, U = Tm * Kb, Tm * Vb
    v_new = U - W * c.S0  # C x V, row j is v_new_j^T
    last = C - 1
    decay_last = sympy.ones(K, 1) if mutation == "state_no_decay" else _eG(a, last, K)
    S_end = sympy.diag(*decay_last) * c.S0
    for j in range(C):
        S_end += _had(c.k[j], _eGG(a, last, j, K)) * v_new[j, :]
    outs = []
    for i in range(C):
        o = (_had(c.q[i], _eG(a, i, K)).T * c.S0).T
        top = i if mutation == "out_strict_mask" else i + 1
        for j in range(top):
            o += (_had(c.q[i], _eGG(a, i, j, K)).T * c.k[j])[0] * v_new[j, :].T
        outs.append(o)
    return S_end, outs


def prove_wy(decay: str = "scalar", *, K: int = 3, V: int = 2, C: int = 3, mutation: str | None = None) -> ProofResult:
    """WY/UT chunk form == delta-rule recurrence (state and every output) for one chunk."""
    statement = (f"delta rule, decay={decay}: the WY/UT chunk form (A = strictly lower b_i<k_i e^(G_i-G_j), k_j>, "
                 f"T = (I+A)^-1, W, U, v_new = U - W S0) gives the recurrence's end state and outputs "
                 f"for a chunk of {C} symbolic tokens, K={K}, V={V}, symbolic S0"
                 + (f" [mutation {mutation}]" if mutation else ""))

    def check():
        c = _chunk(decay, K, V, C)
        S_ref, o_ref = delta_recurrence(c)
        S_wy, o_wy = wy_chunk(c, mutation)
        pairs = _entries("S_end", S_wy - S_ref)
        for t in range(C):
            pairs += _entries(f"o{t}", o_wy[t] - o_ref[t])
        bad = _first_nonzero(pairs)
        return bad is None, "identical polynomials" if bad is None else f"{bad} differs"

    return _timed(f"wy_chunk[{decay}]" + (f"~{mutation}" if mutation else ""), statement, check)


# ----------------------------------------------------------------------------- 2. gated scan


def gated_recurrence(c: _Chunk):
    """S_t = Diag(a_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t."""
    S, outs = c.S0, []
    for t in range(c.C):
        S = sympy.diag(*c.a[t]) * S + c.k[t] * c.v[t].T
        outs.append(S.T * c.q[t])
    return S, outs


def gated_chunk(c: _Chunk, mutation: str | None = None, *, factored: bool = False):
    """Chunked gated scan: boundary state and decay-masked intra-chunk attention.

    pairwise:  o_i = (q_i * e^{G_i})^T S0 + sum_{j<=i} <q_i * e^{G_i-G_j}, k_j> v_j
    factored:  O = (Q * e^G) S0 + (((Q * e^G)(K * e^{-G})^T) . M) V, M the causal mask (j <= i)
    state:     S_end = e^{G_last} * S0 + sum_j (k_j * e^{G_last-G_j}) v_j^T
    Mutations: "mask_strict" (j < i), "no_boundary_decay" (S0 carried undecayed),
    "no_intra_decay" (intra-chunk scores without decay).
    """
    K, C, a = c.K, c.C, c.a
    last = C - 1
    S_end = sympy.diag(*(sympy.ones(K, 1) if mutation == "no_boundary_decay" else _eG(a, last, K))) * c.S0
    for j in range(C):
        S_end += _had(c.k[j], _eGG(a, last, j, K)) * c.v[j].T
    if factored:
        Qg = sympy.Matrix.vstack(*[_had(c.q[i], _eG(a, i, K)).T for i in range(C)])
        Kg = sympy.Matrix.vstack(*[_had(c.k[j], _eG(a, j, K).applyfunc(lambda x: 1 / x)).T for j in range(C)])
        if mutation == "no_intra_decay":
            Qs = sympy.Matrix.vstack(*[c.q[i].T for i in range(C)])
            Ks = sympy.Matrix.vstack(*[c.k[j].T for j in range(C)])
            P = Qs * Ks.T
        else:
            P = Qg * Kg.T
        M = sympy.Matrix(C, C, lambda i, j: 1 if (j < i if mutation == "mask_strict" else j <= i) else 0)
        Vm = sympy.Matrix.vstack(*[c.v[j].T for j in range(C)])
        O = Qg * c.S0 + _had(P, M) * Vm
        return S_end, [O[i, :].T for i in range(C)]
    outs = []
    for i in range(C):
        o = (_had(c.q[i], _eG(a, i, K)).T * c.S0).T
        for j in range(i if mutation == "mask_strict" else i + 1):
            dec = sympy.ones(K, 1) if mutation == "no_intra_decay" else _eGG(a, i, j, K)
            o += (_had(c.q[i], dec).T * c.k[j])[0] * c.v[j]
        outs.append(o)
    return S_end, outs


def prove_gated_scan(decay: str = "scalar", *, K: int = 3, V: int = 2, C: int = 3, factored: bool = False,
                     mutation: str | None = None) -> ProofResult:
    form = "factored (Q e^G)(K e^-G)^T . M" if factored else "pairwise e^(G_i-G_j)"
    statement = (f"gated scan, decay={decay}: chunk boundary state + {form} intra-chunk attention equal the "
                 f"step-by-step additive recurrence for {C} symbolic tokens, K={K}, V={V}, symbolic S0"
                 + (f" [mutation {mutation}]" if mutation else ""))

    def check():
        c = _chunk(decay, K, V, C, beta=False)
        S_ref, o_ref = gated_recurrence(c)
        S_ch, o_ch = gated_chunk(c, mutation, factored=factored)
        pairs = _entries("S_end", S_ch - S_ref)
        for t in range(C):
            pairs += _entries(f"o{t}", o_ch[t] - o_ref[t])
        bad = _first_nonzero(pairs)
        return bad is None, ("identical " + ("rational functions" if factored else "polynomials")
                             if bad is None else f"{bad} differs")

    name = f"gated_scan[{decay}{',factored' if factored else ''}]" + (f"~{mutation}" if mutation else "")
    return _timed(name, statement, check)


# ----------------------------------------------------------------------------- 3. ridge split


def ridge_split(Hc, ks, a, lams, Y, mutation: str | None = None):
    """Per token t of a chunk: A_t y_t by the kernel's split, and ||H_t||_F^2 by the chunked formula.

    matvec: e^{G_t} (H_c y_t) + [((Y K^T) . D) K]_t + lam_t y_t, D_tj = e^{G_t-G_j} [j <= t]
    fro^2:  sum_{i,j<=t} D_ti D_tj (k_i.k_j)^2 + e^{2G_t} ||H_c||_F^2 + 2 e^{G_t} sum_j D_tj k_j^T H_c k_j
    Mutations: "matvec_strict_mask", "matvec_no_inter_decay", "fro_no_cross", "fro_cross_once".
    """
    C = len(ks)
    one = [sympy.Matrix([x]) for x in a]  # scalar decay as 1-vectors for the helpers
    eG = [_eG(one, t, 1)[0] for t in range(C)]
    D = sympy.Matrix(C, C, lambda t, j: _eGG(one, t, j, 1)[0]
                     if (j < t if mutation == "matvec_strict_mask" else j <= t) else 0)
    Km = sympy.Matrix.vstack(*[k.T for k in ks])
    intra = _had(Y * Km.T, D) * Km  # C x K, row t = sum_j D_tj (y_t.k_j) k_j^T
    Dfro = sympy.Matrix(C, C, lambda t, j: _eGG(one, t, j, 1)[0] if j <= t else 0)
    G2 = (Km * Km.T).applyfunc(lambda x: x**2)  # (k_i.k_j)^2
    hc2 = sum(x**2 for x in Hc)
    mv, fro2 = [], []
    for t in range(C):
        inter = (1 if mutation == "matvec_no_inter_decay" else eG[t]) * (Hc * Y[t, :].T)
        mv.append(inter + intra[t, :].T + lams[t] * Y[t, :].T)
        d = Dfro[t, :]
        first = (d * G2 * d.T)[0]
        cross = 2 * eG[t] * sum(d[j] * (ks[j].T * Hc * ks[j])[0] for j in range(C))
        if mutation == "fro_no_cross":
            cross = 0
        elif mutation == "fro_cross_once":
            cross = cross / 2
        fro2.append(first + eG[t] ** 2 * hc2 + cross)
    return mv, fro2


def prove_ridge_split(*, K: int = 2, C: int = 3, mutation: str | None = None) -> ProofResult:
    statement = ("ridge family, scalar decay: for every token t of a chunk, (H_t + lam_t I) y_t == "
                 "e^(G_t) (H_c y_t) + sum_(j<=t) e^(G_t-G_j) k_j (k_j.y_t) + lam_t y_t (batched as "
                 "((Y K^T) . D) K), and ||H_t||_F^2 == ||sum_j e^(G_t-G_j) k_j k_j^T||_F^2 + e^(2G_t)||H_c||_F^2 "
                 "+ 2 e^(G_t) sum_j e^(G_t-G_j) k_j^T H_c k_j, with H_c a general (not assumed symmetric) "
                 f"symbolic chunk-start state, C={C}, K={K}" + (f" [mutation {mutation}]" if mutation else ""))

    def check():
        Hc = _mat("Hc", K, K)
        ks = [_vec(f"k{t}_", K) for t in range(C)]
        a = [sympy.Symbol(f"a{t}", positive=True) for t in range(C)]
        lams = [sympy.Symbol(f"lam{t}", positive=True) for t in range(C)]
        Y = _mat("y", C, K)
        mv, fro2 = ridge_split(Hc, ks, a, lams, Y, mutation)
        H, pairs = Hc, []
        for t in range(C):
            H = a[t] * H + ks[t] * ks[t].T
            pairs += _entries(f"A{t}y{t}", (H + lams[t] * sympy.eye(K)) * Y[t, :].T - mv[t])
            pairs.append((f"fro2[{t}]", sum(x**2 for x in H) - fro2[t]))
        bad = _first_nonzero(pairs)
        return bad is None, "identical polynomials" if bad is None else f"{bad} differs"

    return _timed("ridge_split" + (f"~{mutation}" if mutation else ""), statement, check)


# ----------------------------------------------------------------------------- 4. backward


def chebyshev(matvec, q, mu, L, iters: int, mutation: str | None = None, simplify=sympy.cancel):
    """The DESIGN.md Chebyshev iteration, generic over the operator and the number type.

    rho = (L-mu)/(L+mu); x_{-1} = 0, x_0 = 2q/(L+mu), w_0 = 2; for n >= 1:
    w_n = 4/(4 - rho^2 w_{n-1}),  x_n = x_{n-1} - (2 w_n/(L+mu)) (A x_{n-1} - q) + (w_n - 1)(x_{n-1} - x_{n-2}).
    Returns x_iters. Mutation "w0_one" starts with w_0 = 1 (a wrong polynomial). ``simplify`` is
    applied to every entry of x after each step.
    """
    rho = (L - mu) / (L + mu)
    x_prev, x = 0 * q, (2 / (L + mu)) * q
    w = sympy.Integer(1) if mutation == "w0_one" else sympy.Integer(2)
    for _ in range(iters):
        # The coefficients depend on mu, L only; cancelling them (and x) each step keeps the
        # expressions from swelling, which is what makes r >= 3 tractable symbolically.
        w = sympy.cancel(4 / (4 - rho**2 * w))
        c1, c2 = sympy.cancel(2 * w / (L + mu)), sympy.cancel(w - 1)
        x, x_prev = (x - c1 * (matvec(x) - q) + c2 * (x - x_prev)).applyfunc(simplify), x
    return x


def steepest_descent(matvec, q, iters: int):
    """A solver with an inner-product step (like CG): x is *not* a fixed polynomial of A applied to q."""
    x = 0 * q
    for _ in range(iters):
        r = q - matvec(x)
        Ar = matvec(r)
        x = x + ((r.T * r)[0] / (r.T * Ar)[0]) * r
    return x


def prove_chebyshev_polynomial(*, max_iters: int = 3, mutation: str | None = None) -> ProofResult:
    """The recurrence computes the Chebyshev polynomial: 1 - lam p_n(lam) = T_{n+1}(z(lam))/T_{n+1}(z(0))."""
    statement = ("the DESIGN.md recurrence is Chebyshev iteration on [mu, L]: after n steps (x_0 counted as "
                 "step 0) the residual polynomial is 1 - lam p_n(lam) = T_(n+1)((L+mu-2 lam)/(L-mu)) / "
                 f"T_(n+1)((L+mu)/(L-mu)), for n = 0..{max_iters}, mu, L, lam symbols"
                 + (f" [mutation {mutation}]" if mutation else ""))

    def check():
        mu, L, lam = sympy.symbols("mu L lam", positive=True)
        for n in range(max_iters + 1):
            p = chebyshev(lambda y: lam * y, sympy.Matrix([1]), mu, L, n, mutation)[0]
            z = lambda s: (L + mu - 2 * s) / (L - mu)  # noqa: E731
            target = sympy.chebyshevt(n + 1, z(lam)) / sympy.chebyshevt(n + 1, z(0))
            if not _is_zero(1 - lam * p - target):
                return False, f"residual polynomial differs at n={n}"
        return True, f"residual = scaled T_(n+1) for n = 0..{max_iters}"

    return _timed("chebyshev_polynomial" + (f"~{mutation}" if mutation else ""), statement, check)


def prove_chebyshev_adjoint(*, iters: int = 3, mutation: str | None = None) -> ProofResult:
    statement = ("Chebyshev adjoint (2x2 symbolic symmetric A, symbolic mu, L, q, dx): x_r = P q with "
                 "P = p_r(A) a fixed polynomial of A (coefficients from mu, L, r only), P symmetric, hence "
                 f"grad_q <dx, x_r> = P^T dx = p_r(A) dx = one more Chebyshev run on dx; r={iters}"
                 + (f" [mutation {mutation}]" if mutation else ""))

    def check():
        mu, L = sympy.symbols("mu L", positive=True)
        s00, s01, s10, s11 = sympy.symbols("A00 A01 A10 A11", real=True)
        A = sympy.Matrix([[s00, s10 if mutation == "nonsymmetric_A" else s01], [s01, s11]])
        q, dx = _vec("q", 2), _vec("dx", 2)

        def solve(b):
            if mutation == "steepest_descent":
                return steepest_descent(lambda y: A * y, b, 1)  # one step already needs <r, r>
            return chebyshev(lambda y: A * y, b, mu, L, iters)

        x = solve(q)
        loss = (dx.T * x)[0]
        grad = sympy.Matrix([sympy.diff(loss, qi) for qi in q])
        bad = _first_nonzero(_entries("grad_q - cheb(dx)", grad - solve(dx)))
        if bad:
            return False, f"{bad} is not zero: the adjoint is not one more solver run on dx"
        if mutation is None:
            P = x.jacobian(q)
            if x.jacobian(q).free_symbols & set(q):
                return False, "x is not linear in q"
            if _first_nonzero(_entries("P - P^T", P - P.T)):
                return False, "P is not symmetric"
            # p_r(A) from the scalar recurrence, evaluated as a matrix polynomial (Horner).
            lam = sympy.Symbol("lam")
            p = sympy.Poly(sympy.cancel(chebyshev(lambda y: lam * y, sympy.Matrix([1]), mu, L, iters)[0]), lam)
            PA = sympy.zeros(2, 2)
            for coef in p.all_coeffs():
                PA = PA * A + coef * sympy.eye(2)
            if _first_nonzero(_entries("P - p_r(A)", P - PA)):
                return False, "P is not p_r(A)"
        return True, "grad_q <dx, x_r> == cheb(A, dx); P = p_r(A) symmetric"

    return _timed("chebyshev_adjoint" + (f"~{mutation}" if mutation else ""), statement, check)


def ridge_solve_grad(H, q, dx, ratio, mutation: str | None = None):
    """The backward rule for x = (H + lam I)^{-1} q, lam = ratio ||H||_F, given upstream dx.

    dq = A^{-T} dx (= A^{-1} dx when H is symmetric: the adjoint solve with the same operator)
    dH = -dq x^T - ratio (x.dq) H / ||H||_F
    Mutations: "no_lam_path" (drops the second term), "dq_untransposed" (A^{-1} dx for general H).
    """
    n = H.rows
    fro = sympy.sqrt(sum(e**2 for e in H))
    A = H + ratio * fro * sympy.eye(n)
    Ainv = A.adjugate() / A.det()
    x = Ainv * q
    dq = (Ainv if mutation == "dq_untransposed" else Ainv.T) * dx
    dH = -dq * x.T
    if mutation != "no_lam_path":
        dH -= ratio * (x.T * dq)[0] * H / fro
    return x, dq, dH


def _zero_mod_sqrt(e, n2, s) -> bool:
    """e (a rational function of the symbols and sqrt(n2)) is zero: replace sqrt(n2) by s, reduce mod s^2 - n2."""
    e = e.subs(sympy.sqrt(n2), s)
    num, _ = sympy.fraction(sympy.together(e))
    return sympy.rem(num, s**2 - sympy.expand(n2), s) == 0


def prove_ridge_grad(*, mutation: str | None = None) -> ProofResult:
    statement = ("exact ridge solve x = (H + lam I)^-1 q, lam = a ||H||_F, 2x2: with H a GENERAL matrix of four "
                 "independent symbols, d<dx, x>/dH_ij (sympy) == [-dq x^T - a (x.dq) H/||H||_F]_ij with "
                 "dq = A^-T dx; at symmetric H (H_10 = H_01, the case of H = sum decay k k^T) A^-T = A^-1, so "
                 "dq is the adjoint solve with the same operator. dH is the gradient with respect to the "
                 "independent entries (general convention); a symmetric parametrisation with one symbol h for "
                 "H_01 = H_10 would get dH_01 + dH_10 for it"
                 + (f" [mutation {mutation}]" if mutation else ""))

    def check():
        h = sympy.symbols("h00 h01 h10 h11", real=True)
        H = sympy.Matrix(2, 2, h)
        ratio, s = sympy.symbols("ratio s", positive=True)
        q, dx = _vec("q", 2), _vec("dx", 2)
        n2 = sum(e**2 for e in h)
        x, dq, dH = ridge_solve_grad(H, q, dx, ratio, mutation)
        loss = (dx.T * x)[0]
        for i in range(2):
            for j in range(2):
                d = sympy.diff(loss, H[i, j])
                if not _zero_mod_sqrt(d - dH[i, j], n2, s):
                    return False, f"dH[{i},{j}] differs from sympy's derivative (general H)"
        # Symmetric point: dq from the untransposed inverse (the adjoint solve) gives the same dH.
        sym = {h[2]: h[1]}
        n2s = n2.subs(sym)
        _, _, dHs = ridge_solve_grad(H.subs(sym), q, dx, ratio, "dq_untransposed" if mutation is None else mutation)
        for i in range(2):
            for j in range(2):
                d = sympy.diff(loss, H[i, j]).subs(sym)
                if not _zero_mod_sqrt(d - dHs[i, j], n2s, s):
                    return False, f"dH[{i},{j}] differs at symmetric H with dq = A^-1 dx"
        return True, "matches sympy's derivative for general H, and at symmetric H with dq = A^-1 dx"

    return _timed("ridge_grad" + (f"~{mutation}" if mutation else ""), statement, check)


# ----------------------------------------------------------------------------- all


def run_all() -> list[ProofResult]:
    """Every proof, in pipeline order."""
    return [
        prove_wy("none"),
        prove_wy("scalar"),
        prove_wy("channel"),
        prove_gated_scan("scalar"),
        prove_gated_scan("channel"),
        prove_gated_scan("scalar", factored=True),
        prove_gated_scan("channel", factored=True),
        prove_ridge_split(),
        prove_chebyshev_polynomial(),
        prove_chebyshev_adjoint(),
        prove_ridge_grad(),
    ]


def summary(results: list[ProofResult], *, verbose: bool = False) -> str:
    """A plain-text report (one line per proof; with verbose, the statement under each)."""
    lines = []
    for r in results:
        lines.append(str(r))
        if verbose:
            lines.append(f"       {r.statement}")
    ok = sum(r.passed for r in results)
    lines.append(f"{ok}/{len(results)} proofs passed")
    return "\n".join(lines)


def main() -> int:
    results = run_all()
    print(summary(results, verbose=True))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
