"""The spec's expression language: a whitelisting parser, shape checking, sympy lowering.

Spec text such as ``(I - beta*k*k.T) @ (exp(g)*S) + beta*k*v.T`` is parsed with Python's
``ast`` module (syntax only: nothing is evaluated) and every node is checked against an
allow-list before it becomes one of the small node types below. Nothing in this module
calls ``eval``, ``exec`` or ``sympify`` on spec text.

Conventions: vectors are columns (``k`` is K x 1, ``k.T`` is 1 x K); ``*`` is scalar
scaling, the elementwise product of equal shapes, or broadcasting of a column against a
row (``k*v.T`` is the K x V outer product) or of a column against a matrix
(``exp(g)*S`` with g in R^K is Diag(exp(g)) S); ``@`` is the matrix product; ``I`` is the
identity of whatever square size its neighbours give it.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from fractions import Fraction

import sympy

from ..errors import SpecError

MAX_EXPR_CHARS = 400
MAX_DEPTH = 40
MAX_LITERAL = 10**6

# Function name -> arity. Each has a shape rule in `infer_shape` and a lowering in `Lowering`.
FUNCTIONS = {"exp": 1, "sqrt": 1, "fro": 1, "diag": 1, "solve": 2}
RESERVED = frozenset(FUNCTIONS) | {"I", "T"}

# ----------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class Name:
    id: str


@dataclass(frozen=True)
class Num:
    value: Fraction


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / @ **
    left: object
    right: object


@dataclass(frozen=True)
class Neg:
    operand: object


@dataclass(frozen=True)
class Transpose:
    operand: object


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple


Node = Name | Num | BinOp | Neg | Transpose | Call

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@", ast.Pow: "**"}


def parse_expr(text: object, *, field: str) -> Node:
    """Parse spec text into a Node, or raise SpecError naming ``field``."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SpecError(f"expected an expression string, got {type(text).__name__}", field=field)
    text = str(text).strip()
    if not text:
        raise SpecError("empty expression", field=field)
    if len(text) > MAX_EXPR_CHARS:
        raise SpecError(f"expression longer than {MAX_EXPR_CHARS} characters", field=field)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise SpecError(f"cannot parse {text!r}: {e.msg}", field=field) from None
    return _convert(tree.body, text, field, 0)


def _convert(node: ast.AST, text: str, field: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise SpecError("expression nested too deeply", field=field)

    def sub(n):
        return _convert(n, text, field, depth + 1)

    def bad(what):
        snippet = ast.get_source_segment(text, node) or text
        return SpecError(f"{what} is not allowed in {snippet!r}", field=field)

    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return BinOp(_BINOPS[type(node.op)], sub(node.left), sub(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return Neg(sub(node.operand))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
        return sub(node.operand)
    if isinstance(node, ast.Name):
        return Name(node.id)
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad(f"the literal {v!r}")
        if not abs(v) <= MAX_LITERAL:  # also catches nan/inf
            raise bad(f"the literal {v!r} (magnitude above {MAX_LITERAL})")
        return Num(Fraction(v).limit_denominator(10**9) if isinstance(v, float) else Fraction(v))
    if isinstance(node, ast.Attribute):
        if node.attr != "T":
            raise bad(f"the attribute '.{node.attr}' (only '.T' exists)")
        return Transpose(sub(node.value))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            fn = node.func.id if isinstance(node.func, ast.Name) else ast.get_source_segment(text, node.func)
            raise bad(f"calling {fn!r} (functions: {', '.join(sorted(FUNCTIONS))})")
        if node.keywords:
            raise bad("a keyword argument")
        want = FUNCTIONS[node.func.id]
        if len(node.args) != want:
            raise bad(f"{node.func.id}() with {len(node.args)} arguments (takes {want})")
        return Call(node.func.id, tuple(sub(a) for a in node.args))
    raise bad(f"the construct '{type(node).__name__}'")


def names(node: Node) -> set[str]:
    """Every identifier the expression mentions."""
    if isinstance(node, Name):
        return {node.id}
    if isinstance(node, BinOp):
        return names(node.left) | names(node.right)
    if isinstance(node, (Neg, Transpose)):
        return names(node.operand)
    if isinstance(node, Call):
        return set().union(*(names(a) for a in node.args))
    return set()


def calls(node: Node) -> list[Call]:
    """Every function call in the expression, outermost first."""
    if isinstance(node, Call):
        return [node] + [c for a in node.args for c in calls(a)]
    if isinstance(node, BinOp):
        return calls(node.left) + calls(node.right)
    if isinstance(node, (Neg, Transpose)):
        return calls(node.operand)
    return []


def to_text(node: Node) -> str:
    """Canonical text of a node (fully parenthesised where precedence could mislead)."""
    if isinstance(node, Name):
        return node.id
    if isinstance(node, Num):
        return str(node.value)
    if isinstance(node, Neg):
        return f"-{_wrap(node.operand)}"
    if isinstance(node, Transpose):
        return f"{_wrap(node.operand)}.T"
    if isinstance(node, Call):
        return f"{node.fn}({', '.join(to_text(a) for a in node.args)})"
    return f"{_wrap(node.left)} {node.op} {_wrap(node.right)}"


def _wrap(node: Node) -> str:
    s = to_text(node)
    return s if isinstance(node, (Name, Num, Call, Transpose)) else f"({s})"


# ----------------------------------------------------------------------------- shapes

SCALAR = ("1", "1")
ANY_SQUARE = ("*", "*")  # the shape of I before its neighbours fix it


def shape_text(shape: tuple[str, str]) -> str:
    if shape == SCALAR:
        return "scalar"
    if shape == ANY_SQUARE:
        return "identity"
    return f"{shape[0]}x{shape[1]}"


def infer_shape(node: Node, env: dict[str, tuple[str, str]], *, field: str) -> tuple[str, str]:
    """Shape of ``node`` given the shapes of names; SpecError on any mismatch.

    Shapes are pairs of dimension names ("K", "V", "1"); dims are distinct symbols, so
    ``k*v`` (K x 1 times V x 1) is a mismatch even if a caller later sets K == V.
    """

    def err(msg):
        return SpecError(f"{msg} in {to_text(node)!r}", field=field)

    if isinstance(node, Name):
        if node.id == "I":
            return ANY_SQUARE
        if node.id not in env:
            known = ", ".join(sorted(env)) or "none"
            raise SpecError(f"unknown symbol {node.id!r} (known here: {known}, I)", field=field)
        return env[node.id]
    if isinstance(node, Num):
        return SCALAR
    if isinstance(node, Neg):
        return infer_shape(node.operand, env, field=field)
    if isinstance(node, Transpose):
        s = infer_shape(node.operand, env, field=field)
        return (s[1], s[0])
    if isinstance(node, Call):
        args = [infer_shape(a, env, field=field) for a in node.args]
        if node.fn == "exp":
            if args[0] == ANY_SQUARE:
                raise err("exp(I) is not meaningful")
            return args[0]
        if node.fn == "sqrt":
            if args[0] != SCALAR:
                raise err(f"sqrt takes a scalar, got {shape_text(args[0])}")
            return SCALAR
        if node.fn == "fro":
            r, c = args[0]
            if args[0] in (SCALAR, ANY_SQUARE) or "1" in (r, c):
                raise err(f"fro takes a matrix, got {shape_text(args[0])}")
            return SCALAR
        if node.fn == "diag":
            r, c = args[0]
            if c != "1" or r == "1":
                raise err(f"diag takes a column vector, got {shape_text(args[0])}")
            return (r, r)
        if node.fn == "solve":
            a, b = args
            if a == ANY_SQUARE or a[0] != a[1] or a[0] == "1":
                raise err(f"solve needs a square matrix first, got {shape_text(a)}")
            if b != (a[0], "1"):
                raise err(f"solve({shape_text(a)}, {shape_text(b)}): the right-hand side must be {a[0]}x1")
            return b
    if isinstance(node, BinOp):
        l = infer_shape(node.left, env, field=field)
        r = infer_shape(node.right, env, field=field)
        lt, rt = shape_text(l), shape_text(r)
        if node.op in "+-":
            if l == r:
                return l
            if ANY_SQUARE in (l, r):
                other = r if l == ANY_SQUARE else l
                if other[0] == other[1] and other != SCALAR:
                    return other
                raise err(f"I cannot be added to a {shape_text(other)} value")
            if SCALAR in (l, r):
                raise err(f"cannot add a scalar and a {lt if r == SCALAR else rt} value (write lam*I for a multiple of the identity)")
            raise err(f"dimension mismatch: {lt} {node.op} {rt}")
        if node.op == "*":
            if l == SCALAR:
                return r
            if r == SCALAR:
                return l
            if ANY_SQUARE in (l, r):
                raise err("I may only be scaled by a scalar")
            if l == r:
                return l
            if l[1] == "1" and r[0] == "1":
                return (l[0], r[1])  # column * row: outer product
            if l[1] == "1" and l[0] == r[0]:
                return r  # column * matrix: scale rows
            if r[1] == "1" and r[0] == l[0]:
                return l
            if l[0] == "1" and l[1] == r[1]:
                return r  # row * matrix: scale columns
            if r[0] == "1" and r[1] == l[1]:
                return l
            hint = ""
            if l[1] == "1" and r[1] == "1":
                hint = " (an outer product needs a transpose, e.g. k*v.T)"
            raise err(f"dimension mismatch: {lt} * {rt}{hint}")
        if node.op == "@":
            if l == SCALAR or r == SCALAR:
                raise err("'@' needs matrices or vectors on both sides (use '*' to scale)")
            if l == ANY_SQUARE:
                return r
            if r == ANY_SQUARE:
                return l
            if l[1] != r[0]:
                raise err(f"dimension mismatch: {lt} @ {rt}")
            return (l[0], r[1])
        if node.op == "/":
            if r != SCALAR:
                raise err(f"can only divide by a scalar, got {rt}")
            return l
        if node.op == "**":
            if l != SCALAR or not isinstance(node.right, (Num, Neg)):
                raise err("'**' takes a scalar base and a numeric exponent")
            return SCALAR
    raise err("unsupported expression")  # pragma: no cover - parse_expr admits nothing else


# ----------------------------------------------------------------------------- sympy

@dataclass(frozen=True)
class _Identity:
    """``coef * I`` whose size is not known until it meets a matrix."""

    coef: object = sympy.Integer(1)


class Lowering:
    """Evaluates a shape-checked Node into explicit sympy values.

    ``values`` maps names to sympy scalars or explicit ``sympy.Matrix`` objects (vectors as
    columns). ``solve`` calls are delegated to ``on_solve(A, b)``, so the caller chooses
    between an exact solve and an opaque symbol (the canonicaliser needs the latter).
    """

    def __init__(self, values: dict, on_solve=None):
        self.values = values
        self.on_solve = on_solve or (lambda a, b: a.LUsolve(b))

    def __call__(self, node: Node):
        v = self._eval(node)
        if isinstance(v, _Identity):
            raise ValueError("an expression cannot be a bare multiple of I")
        return v

    @staticmethod
    def _is_mat(x):
        return isinstance(x, sympy.MatrixBase)

    def _eval(self, node: Node):
        if isinstance(node, Name):
            return _Identity() if node.id == "I" else self.values[node.id]
        if isinstance(node, Num):
            return sympy.Rational(node.value.numerator, node.value.denominator)
        if isinstance(node, Neg):
            v = self._eval(node.operand)
            return _Identity(-v.coef) if isinstance(v, _Identity) else -v
        if isinstance(node, Transpose):
            v = self._eval(node.operand)
            return v.T if self._is_mat(v) else v
        if isinstance(node, Call):
            args = [self._eval(a) for a in node.args]
            if node.fn == "exp":
                return args[0].applyfunc(sympy.exp) if self._is_mat(args[0]) else sympy.exp(args[0])
            if node.fn == "sqrt":
                return sympy.sqrt(args[0])
            if node.fn == "fro":
                return sympy.sqrt(sum(e**2 for e in args[0]))
            if node.fn == "diag":
                return sympy.diag(*list(args[0]))
            if node.fn == "solve":
                return self.on_solve(*args)
        assert isinstance(node, BinOp)
        l, r = self._eval(node.left), self._eval(node.right)
        op = node.op
        if op in "+-":
            sign = 1 if op == "+" else -1
            if isinstance(l, _Identity) and isinstance(r, _Identity):
                return _Identity(l.coef + sign * r.coef)
            if isinstance(l, _Identity):
                return l.coef * sympy.eye(r.rows) + sign * r
            if isinstance(r, _Identity):
                return l + sign * r.coef * sympy.eye(l.rows)
            return l + sign * r
        if op == "*":
            if isinstance(l, _Identity):
                return _Identity(l.coef * r)
            if isinstance(r, _Identity):
                return _Identity(r.coef * l)
            if not self._is_mat(l) or not self._is_mat(r):
                return l * r
            return _broadcast_mul(l, r)
        if op == "@":
            if isinstance(l, _Identity):
                return l.coef * r
            if isinstance(r, _Identity):
                return r.coef * l
            return l * r
        if op == "/":
            return _Identity(l.coef / r) if isinstance(l, _Identity) else l / r
        if op == "**":
            return l**r
        raise ValueError(op)  # pragma: no cover


def _broadcast_mul(l: sympy.Matrix, r: sympy.Matrix) -> sympy.Matrix:
    """``*`` between two explicit matrices, with the broadcasting rules of infer_shape."""
    if l.shape == r.shape:
        return l.multiply_elementwise(r)
    rows = max(l.rows, r.rows)
    cols = max(l.cols, r.cols)

    def at(m, i, j):
        return m[i if m.rows > 1 else 0, j if m.cols > 1 else 0]

    return sympy.Matrix(rows, cols, lambda i, j: at(l, i, j) * at(r, i, j))


# ----------------------------------------------------------------------------- identifiers

IDENT = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
STATE_IDENT = re.compile(r"^[A-Z][A-Za-z0-9_]{0,15}$")
DIM_IDENT = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")
CLASS_IDENT = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# Names that would shadow something the generated Python relies on.
PYTHON_RESERVED = frozenset(
    """and as assert async await break class continue def del elif else except finally for from
    global if import in is lambda nonlocal not or pass raise return try while with yield
    torch triton tl tilelang self cls ctx do dht initial_state output_final_state
    cu_seqlens backend chunk_size""".split()
)


def check_identifier(name: object, pattern: re.Pattern, *, what: str, field: str) -> str:
    """Validate a name that will appear in generated code."""
    if not isinstance(name, str) or not pattern.match(name):
        raise SpecError(f"{what} {name!r} must match {pattern.pattern}", field=field)
    if name in PYTHON_RESERVED or name in RESERVED:
        raise SpecError(f"{what} {name!r} is reserved", field=field)
    return name
