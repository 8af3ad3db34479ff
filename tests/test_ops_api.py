"""The functional API of the committed generated/ packages.

Names (ours and fla's), the exact signature of `op_signature`, argument checking (one
ValueError per bad argument, naming it), the reference backend, backend selection, and - when
a family's Triton kernels are generated - the kernels against the reference, forward and
backward, through the eager autograd.Function, the torch.library custom ops (opcheck) and
torch.compile(fullgraph=True).

The Triton kernels run on CPU in the Triton interpreter. Triton reads TRITON_INTERPRET when a
kernel is decorated, i.e. when generated.<name> is first imported, so it is set here before
any import of triton or of the generated packages.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib  # noqa: E402
import inspect  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gka_gen.codegen import op_runtime  # noqa: E402
from gka_gen.reference import python_signature, reference_op  # noqa: E402
from gka_gen.signature import op_signature  # noqa: E402
from gka_gen.spec import load_spec  # noqa: E402
from gka_gen.symbolic.canonical import canonicalize  # noqa: E402
from gka_gen.testing import make_inputs  # noqa: E402

NAMES = ["deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet"]
FLA_NAMES = {
    "deltanet": ["chunk_delta_rule", "fused_recurrent_delta_rule"],
    "gated_deltanet": ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule"],
    "kda": ["chunk_kda", "fused_recurrent_kda"],
    "gla": ["chunk_gla", "fused_recurrent_gla"],
    "gka": ["chunk_gka", "fused_recurrent_gka"],
    "mesanet": [],
}
LAYERS = {"deltanet": "DeltaNet", "gated_deltanet": "GatedDeltaNet", "kda": "KimiDeltaAttention",
          "gla": "GatedLinearAttention", "gka": "GatedKalmaNet", "mesanet": "MesaNet"}

_SPECS: dict = {}


def spec_of(name):
    if name not in _SPECS:
        spec = load_spec(ROOT / "specs" / f"{name}.yaml")
        _SPECS[name] = (spec, canonicalize(spec))
    return _SPECS[name]


def pkg(name):
    return importlib.import_module(f"generated.{name}")


def chunk(name):
    return getattr(pkg(name), f"chunk_{name}")


def inputs(name, **kw):
    kw = {"B": 1, "T": 12, "H": 2, "K": 16, "V": 32, **kw}
    return make_inputs(spec_of(name)[0], **kw)


# ----------------------------------------------------------------------------- names, signatures


@pytest.mark.parametrize("name", NAMES)
def test_package_exports(name):
    p = pkg(name)
    expected = [f"chunk_{name}", f"fused_recurrent_{name}", *FLA_NAMES[name]]
    if (ROOT / "templates" / "package" / "layer.py.j2").exists():
        expected.append(LAYERS[name])
    for n in expected:
        assert callable(getattr(p, n)), n
        assert n in p.__all__, n
    for alias, ours in zip(FLA_NAMES[name], [f"chunk_{name}", f"fused_recurrent_{name}"]):
        assert getattr(p, alias) is getattr(p, ours)


def test_root_package_and_no_fla_import():
    import generated  # noqa: F401

    for name in NAMES:
        for f in (ROOT / "generated" / name).rglob("*.py"):
            text = f.read_text()
            assert "import fla" not in text and "from fla" not in text, f


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["chunk", "fused_recurrent"])
def test_signature_matches_op_signature(name, kind):
    spec, _ = spec_of(name)
    params = inspect.signature(getattr(pkg(name), f"{kind}_{name}")).parameters
    sig = op_signature(spec)
    assert list(params) == [a.name for a in sig] + ["backend", "cp_group"]
    assert params["backend"].default == "auto"
    seen_default = False
    for a in sig:
        p = params[a.name]
        if a.kind == "option":
            assert p.default == a.default, a.name
        elif a.kind == "param" and isinstance(a.default, (int, float)):
            assert p.default == a.default and type(p.default) is type(a.default), a.name
        elif a.required and not seen_default:
            assert p.default is inspect.Parameter.empty, a.name
        else:
            assert p.default is None, a.name
        seen_default |= p.default is not inspect.Parameter.empty
    # the same Python signature as the reference backend's
    ref = python_signature(spec)
    assert [(p.name, p.default) for p in ref.parameters.values()] == \
        [(p.name, p.default) for p in params.values()][:-2]


def test_signatures_as_in_the_design():
    s = inspect.signature(pkg("gated_deltanet").chunk_gated_deltanet)
    assert str(s) == ("(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, "
                      "cu_seqlens=None, backend='auto', cp_group=None)")
    s = inspect.signature(pkg("gka").chunk_gka)
    assert str(s) == ("(q, k, v, g=None, gk=None, alpha=None, scale=None, ridge_ratio=0.02, num_iter=30, "
                      "initial_state=None, output_final_state=False, cu_seqlens=None, backend='auto', cp_group=None)")


# ----------------------------------------------------------------------------- argument checks


def _bad(name, match, **changes):
    a = inputs(name)
    a.update(changes)
    with pytest.raises(ValueError, match=match):
        chunk(name)(**a, backend="reference")


def test_bad_shapes():
    a = inputs("gated_deltanet")
    _bad("gated_deltanet", r"q must be \[B, T, H, K\]", q=a["q"][0])
    _bad("gated_deltanet", r"k has \[B, T, H\]", k=a["k"][:, :5])
    _bad("gated_deltanet", r"v must be a tensor", v=[1.0])
    _bad("gated_deltanet", r"k has K = 32, but an earlier argument has K = 16",
         k=torch.randn(1, 12, 2, 32))
    _bad("gated_deltanet", r"gate g must be \[B, T, H\]", g=torch.randn(1, 12, 2, 16))
    _bad("gated_deltanet", r"gate beta must be \[B, T, H\]", beta=a["beta"][:, :3])
    _bad("kda", r"gate g must be \[B, T, H, K\]", g=torch.randn(1, 12, 2))
    _bad("kda", r"gate g has K = 32", g=torch.randn(1, 12, 2, 32))
    _bad("mesanet", r"lamb must be \[H, K\]", lamb=torch.rand(3, 16) + 1)
    _bad("gated_deltanet", r"empty batch, time or head", q=torch.randn(1, 0, 2, 16), k=torch.randn(1, 0, 2, 16),
         v=torch.randn(1, 0, 2, 32), g=torch.zeros(1, 0, 2), beta=torch.zeros(1, 0, 2))


def test_required_gates_and_params():
    _bad("gated_deltanet", r"gate beta .* is required", beta=None)
    _bad("deltanet", r"gate beta .* is required", beta=None)
    _bad("mesanet", r"lamb must be a tensor \[H, K\]", lamb=None)


def test_bad_dtypes():
    a = inputs("gated_deltanet")
    # (backend="reference" also takes fp64, hence the optional /fp64)
    _bad("gated_deltanet", r"q must be fp32/bf16/fp16(/fp64)?, got torch.int64", q=a["q"].long())
    _bad("gated_deltanet", r"must share one dtype: q is torch.float32, k is torch.bfloat16", k=a["k"].bfloat16())
    _bad("gated_deltanet", r"gate g must be fp32/bf16/fp16(/fp64)?, got torch.int64", g=a["g"].long())
    # bf16 / fp16 inputs are fine (reference upcasts; o comes back in q's dtype)
    b = {k: (v.bfloat16() if k in ("q", "k", "v") else v) for k, v in a.items()}
    o, _ = chunk("gated_deltanet")(**b, backend="reference")
    assert o.dtype == torch.bfloat16


def test_fp64_only_for_the_reference():
    a = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in inputs("gated_deltanet").items()}
    o, _ = chunk("gated_deltanet")(**a, backend="reference")
    assert o.dtype == torch.float64
    with pytest.raises(ValueError, match="fp32/bf16/fp16, got torch.float64"):
        chunk("gated_deltanet")(**a, backend="auto")


def test_one_device():
    a = inputs("gated_deltanet")
    _bad("gated_deltanet", r"one device: q is on cpu, k on meta", k=a["k"].to("meta"))
    _bad("gated_deltanet", r"one device: q is on cpu, gate beta on meta", beta=a["beta"].to("meta"))
    _bad("gated_deltanet", r"one device: q is on cpu, initial_state on meta",
         initial_state=torch.zeros(1, 2, 16, 32, device="meta"))


def test_bad_cu_seqlens():
    name = "gated_deltanet"
    a = inputs(name, T=12, cu_seqlens=[0, 5, 12])
    _bad(name, "1-D int32/int64 tensor, got a 1-D torch.float32", cu_seqlens=a["cu_seqlens"].float())
    _bad(name, "1-D int32/int64 tensor, got a 2-D", cu_seqlens=a["cu_seqlens"][None])
    _bad(name, "1-D int32/int64 tensor, got list", cu_seqlens=[0, 5, 12])
    _bad(name, "at least 2 entries", cu_seqlens=torch.tensor([0]))
    _bad(name, "start at 0 and end at T = 12", cu_seqlens=torch.tensor([1, 5, 12]))
    _bad(name, "start at 0 and end at T = 12", cu_seqlens=torch.tensor([0, 5, 11]))
    _bad(name, "strictly increasing", cu_seqlens=torch.tensor([0, 5, 5, 12]))
    _bad(name, "strictly increasing", cu_seqlens=torch.tensor([0, 7, 5, 12]))
    b = inputs(name, B=2, T=12)
    with pytest.raises(ValueError, match="B must be 1, got B = 2"):
        chunk(name)(**b, cu_seqlens=torch.tensor([0, 5, 12]), backend="reference")
    # int32 is as good as int64
    a["cu_seqlens"] = a["cu_seqlens"].int()
    chunk(name)(**a, backend="reference")


def test_bad_initial_state():
    name = "gated_deltanet"
    _bad(name, r"initial_state must be \[N, H, K, V\] = \[1, 2, 16, 32\]", initial_state=torch.zeros(1, 2, 32, 16))
    _bad(name, r"initial_state must be fp32", initial_state=torch.zeros(1, 2, 16, 32, dtype=torch.bfloat16))
    # N is the number of sequences with cu_seqlens
    _bad(name, r"\[N, H, K, V\] = \[2, 2, 16, 32\]", cu_seqlens=torch.tensor([0, 5, 12]),
         initial_state=torch.zeros(1, 2, 16, 32))
    _bad("gka", r"initial_state must be a tuple \(H, U\)", initial_state=torch.zeros(1, 2, 16, 32))
    _bad("gka", r"initial_state must be a tuple \(H, U\)", initial_state=(torch.zeros(1, 2, 16, 16),))
    _bad("gka", r"initial_state\[U\] must be \[N, H, K, V\]",
         initial_state=(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)))


def test_head_dims_within_the_spec():
    _bad("gated_deltanet", r"K = 8 is not supported: it must lie in \[16, 256\] and be a multiple of 16",
         **inputs("gated_deltanet", K=8))
    _bad("gated_deltanet", r"K = 24 is not supported", **inputs("gated_deltanet", K=24))
    _bad("gated_deltanet", r"V = 272 is not supported", **inputs("gated_deltanet", V=272))


def test_bad_params():
    _bad("gka", "num_iter must be positive, got 0", num_iter=0)
    _bad("gka", "num_iter must be an int, got float", num_iter=2.5)
    _bad("gka", "num_iter must be an int, got bool", num_iter=True)
    _bad("gka", "ridge_ratio must be positive and finite, got -1", ridge_ratio=-1.0)
    _bad("gka", "ridge_ratio must be positive and finite, got nan", ridge_ratio=float("nan"))
    _bad("gka", "scale must be a number, got str", scale="0.1")
    _bad("mesanet", "lamb must be positive everywhere", lamb=-torch.ones(2, 16))
    _bad("gated_deltanet", "output_final_state must be a bool", output_final_state=1)


def test_bad_backend():
    a = inputs("gated_deltanet")
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'triton', 'tilelang', 'reference'"):
        chunk("gated_deltanet")(**a, backend="cuda")
    with pytest.raises(ValueError, match="no TileLang kernels|TileLang kernels need CUDA"):
        chunk("gated_deltanet")(**a, backend="tilelang")


def test_gate_defaults_are_the_specs():
    """gka: g=None is no decay, gk=None is g, alpha=None is 1 (pure ridge readout)."""
    a = inputs("gka")
    f = chunk("gka")
    base = {k: a[k] for k in ("q", "k", "v")}
    g = a["g"]
    o1, _ = f(**base, g=g, backend="reference")
    o2, _ = f(**base, g=g, gk=g, alpha=torch.ones_like(g), backend="reference")
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    o3, _ = f(**base, backend="reference")
    o4, _ = f(**base, g=torch.zeros_like(g), backend="reference")
    torch.testing.assert_close(o3, o4, rtol=0, atol=0)


# ----------------------------------------------------------------------------- reference backend


@pytest.mark.parametrize("name", NAMES)
def test_reference_backend_is_the_reference(name):
    spec, cf = spec_of(name)
    ref = reference_op(spec, cf)
    a = inputs(name, T=20, cu_seqlens=[0, 3, 20], initial_state=True)
    for fn in (chunk(name), getattr(pkg(name), f"fused_recurrent_{name}")):
        o, s = fn(**a, output_final_state=True, backend="reference")
        ro, rs = ref(**a, output_final_state=True)
        assert torch.equal(o, ro)
        for x, y in zip(s if isinstance(s, tuple) else (s,), rs if isinstance(rs, tuple) else (rs,)):
            assert torch.equal(x, y)
    o, s = chunk(name)(**a, backend="reference")
    assert s is None


# ----------------------------------------------------------------------------- backend choice


def test_auto_backend_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    kw = dict(triton_pkg=object(), triton_error=None, tilelang_pkg=None)
    assert op_runtime.resolve_backend("auto", cpu, "op", interpreted=True, **kw) == "triton"
    assert op_runtime.resolve_backend("auto", cpu, "op", interpreted=False, **kw) == "reference"
    assert op_runtime.resolve_backend("auto", cuda, "op", interpreted=False, **kw) == "triton"
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        op_runtime.resolve_backend("triton", cpu, "op", interpreted=False, **kw)
    none = dict(triton_pkg=None, triton_error="ImportError: x", tilelang_pkg=None)
    assert op_runtime.resolve_backend("auto", cpu, "op", interpreted=True, **none) == "reference"
    with pytest.raises(RuntimeError, match="ImportError: x"):
        op_runtime.resolve_backend("triton", cpu, "op", interpreted=True, **none)


def test_auto_on_cpu_without_interpreter_is_quiet(recwarn):
    """Without the interpreter, auto on CPU is the reference, with no warning."""
    ops = pkg("gated_deltanet").ops
    a = inputs("gated_deltanet")
    want, _ = chunk("gated_deltanet")(**a, backend="reference")
    saved = ops._INTERPRETED
    try:
        ops._INTERPRETED = False
        o, _ = chunk("gated_deltanet")(**a)
    finally:
        ops._INTERPRETED = saved
    assert torch.equal(o, want)
    assert not [w for w in recwarn if "gka" in str(w.message) or "reference" in str(w.message)]


def test_interpreter_is_detected_from_the_kernels(monkeypatch):
    """Interpreter or not is a property of the decorated kernels, not of today's environment."""
    import types

    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    def kernel(x):
        pass

    for cls, expected in ((InterpretedFunction, True), (JITFunction, False)):
        pkg_mod = types.ModuleType("_fake_kernels")
        sub = types.ModuleType("_fake_kernels.chunk_fwd")
        sub.some_kernel = cls(kernel)
        monkeypatch.setitem(sys.modules, "_fake_kernels", pkg_mod)
        monkeypatch.setitem(sys.modules, "_fake_kernels.chunk_fwd", sub)
        assert op_runtime.kernels_interpreted(pkg_mod) is expected
    assert op_runtime.kernels_interpreted(None) is False


# ----------------------------------------------------------------------------- the kernels


def _triton_or_skip(name):
    ops = pkg(name).ops
    if ops._triton_kernels is None:
        _, cf = spec_of(name)
        pytest.skip(f"no Triton kernels in generated/{name}: templates/triton/{cf.family}/ has no templates yet "
                    f"({ops._TRITON_ERROR})")
    if not ops._INTERPRETED:
        pytest.skip("generated packages were imported without TRITON_INTERPRET=1, so their kernels cannot run on CPU")
    return ops


def _flat(x):
    return list(x) if isinstance(x, (tuple, list)) else [x]


def _leaves(a):
    names = [k for k, v in a.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return names, [a[k] for k in names] + _flat(a.get("initial_state"))


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# fp32 kernels against the fp32 reference: chunked reassociation gives a few 1e-6 relative
# (linear family); a ridge solve amplifies rounding by its condition number (<= 51 for
# ridge_ratio 0.02). A wrong term is an O(1e-1) error, far above either bound.
# Ridge gradients: the kernels differentiate implicitly, i.e. they return the gradient of the
# *exact* solve evaluated at the iterate (DESIGN: "the reference for its gradients is autograd
# through an exact torch.linalg.solve"), so they are compared with the reference run with
# solver="exact"; what is left is the solver's residual in x (~0.75^30 ~ 2e-4 for Chebyshev at
# condition 51), amplified.
TOL = {"linear": (1e-4, 1e-4), "ridge": (2e-3, 1e-2)}  # (forward, gradients)
CASES = {
    "ragged T, h0": dict(B=2, T=37, initial_state=True),
    "varlen, h0": dict(B=1, T=45, cu_seqlens=[0, 6, 29, 45], initial_state=True),
}


def _kernel_vs_reference(name, kind, case, compiled=False, H=2):
    _triton_or_skip(name)
    spec, cf = spec_of(name)
    a = inputs(name, H=H, K=16, V=32, seed=3, requires_grad=True, **CASES[case])
    fn = getattr(pkg(name), f"{kind}_{name}")
    ref_a = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point()
                 else tuple(s.detach().clone().requires_grad_(True) for s in v) if isinstance(v, tuple) else v)
             for k, v in a.items()}
    ro, rs = reference_op(spec, cf)(**ref_a, output_final_state=True)
    if cf.family == "ridge":  # gradients against the exact solve (see TOL)
        ref_a = {k: (v.detach().clone().requires_grad_(True) if isinstance(v, torch.Tensor) and v.is_floating_point()
                     else tuple(s.detach().clone().requires_grad_(True) for s in v) if isinstance(v, tuple) else v)
                 for k, v in a.items()}
        go, gs = reference_op(spec, cf, solver="exact")(**ref_a, output_final_state=True)
    else:
        go, gs = ro, rs
    call = (torch.compile(lambda **kw: fn(**kw), backend="aot_eager", fullgraph=True) if compiled else fn)
    try:
        o, s = call(**a, output_final_state=True, backend="triton")
    except NotImplementedError as e:
        pytest.skip(f"{name}: a Triton kernel raises NotImplementedError (not written yet) {e}")
    tol, gtol = TOL[cf.family]
    assert _rel(o, ro) < tol
    for x, y in zip(_flat(s), _flat(rs)):
        assert _rel(x, y) < tol
    gen = torch.Generator().manual_seed(7)
    do = torch.randn(ro.shape, generator=gen)
    dht = [torch.randn(x.shape, generator=gen) for x in _flat(rs)]
    names, leaves = _leaves(a)
    _, rleaves = _leaves(ref_a)
    try:
        got = torch.autograd.grad([o, *_flat(s)], leaves, [do, *dht], allow_unused=True)
    except NotImplementedError as e:
        pytest.skip(f"{name}: Triton chunk_bwd raises NotImplementedError (not written yet) {e}")
    want = torch.autograd.grad([go, *_flat(gs)], rleaves, [do, *dht], allow_unused=True)
    labels = names + [f"initial_state[{i}]" for i in range(len(_flat(a["initial_state"])))]
    for label, x, y in zip(labels, got, want):
        if y is None:
            continue
        assert x is not None, f"no gradient for {label}"
        assert _rel(x, y) < gtol, f"d{label}: {_rel(x, y):.2e}"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", NAMES)
def test_chunk_triton_matches_reference(name, case):
    _kernel_vs_reference(name, "chunk", case)


@pytest.mark.parametrize("name", NAMES)
def test_fused_recurrent_triton_matches_reference(name):
    _kernel_vs_reference(name, "fused_recurrent", "varlen, h0", H=1)  # H=1: the interpreter is slow


@pytest.mark.parametrize("name", NAMES)
def test_compiled_fullgraph_custom_ops_match_reference(name):
    """torch.compile(fullgraph=True) traces the wrapper and the custom ops, forward and backward."""
    torch._dynamo.reset()
    _kernel_vs_reference(name, "chunk", "varlen, h0", compiled=True, H=1)


# One spec per kind of optional-argument pattern (the custom-op code is the same template for
# every spec of a family; what differs is which arguments are absent): g+beta, no beta,
# g+gk+alpha, beta+lamb. Each opcheck costs tens of seconds in the interpreter.
@pytest.mark.parametrize("name", ["gated_deltanet", "gla", "gka", "mesanet"])
def test_custom_ops_opcheck(name):
    ops = _triton_or_skip(name)
    a = inputs(name, B=1, T=19, H=1, K=16, V=16, seed=1, cu_seqlens=[0, 7, 19], initial_state=True,
               requires_grad=True)
    bound = inspect.signature(chunk(name)).bind(**a, output_final_state=True)
    bound.apply_defaults()
    a = {k: v for k, v in bound.arguments.items() if k != "backend"}
    ops._resolve_defaults(a, ops._check("opcheck", a))
    kargs = ops._kernel_args(a)
    h0 = op_runtime.unpack_state(a["initial_state"], len(spec_of(name)[1].states))
    fwd_args = (*kargs, *h0, True, a["cu_seqlens"], "triton")
    try:
        # Every check on the chunked forward; the recurrent forward shares its fake and autograd,
        # the backward op has no autograd of its own (and each full opcheck costs seconds in the
        # interpreter), so those get the checks that can differ.
        torch.library.opcheck(ops._chunk_fwd_op, fwd_args)
        torch.library.opcheck(ops._recurrent_fwd_op, fwd_args,
                              test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
        o, *hts = ops._chunk_fwd_op(*fwd_args)
        det = [x.detach() if isinstance(x, torch.Tensor) else x for x in (*kargs, *h0)]
        torch.library.opcheck(ops._chunk_bwd_op, (*det, a["cu_seqlens"], torch.randn_like(o),
                                                  *[torch.randn_like(h) for h in hts], "triton"),
                              test_utils=("test_schema", "test_faketensor"))
    except Exception as e:  # opcheck wraps the op's own errors
        cause = e
        while cause is not None and not isinstance(cause, NotImplementedError):
            cause = cause.__cause__
        if cause is None:
            raise
        pytest.skip(f"{name}: a Triton kernel raises NotImplementedError (not written yet) {cause}")
