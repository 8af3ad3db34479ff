"""The generated layer (templates/package/layer.py.j2 + gka_gen.runtime) for every spec.

Each spec's layer is rendered from the current template into a temporary package whose
ops.py forwards to generated/<name>/ops.py when that package exists and imports, and to
`gka_gen.reference.reference_op` (the naive recurrence derived from the spec) otherwise.
Layers run with backend="reference" (CPU).

Shapes are tiny (hidden 32, 2 heads, head_dim 16) and everything runs in fp32 on CPU.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

from gka_gen.codegen.render import render
from gka_gen.runtime.layers import LayerCache, ShortConvolution
from gka_gen.spec import load_spec
from gka_gen.spec.yaml_io import read_yaml
from gka_gen.symbolic.canonical import canonicalize

REPO = Path(__file__).resolve().parents[1]
SPEC_PATHS = sorted((REPO / "specs").glob("*.yaml"))
NAMES = [p.stem for p in SPEC_PATHS]
TEMPLATE = "package/layer.py.j2"
HIDDEN, HEADS, HEAD_DIM = 32, 2, 16

# Tolerance of "two ways of computing the same thing" in fp32: decoding step by step and the
# chunked forward evaluate the same per-token math, differing only in summation order (conv1d
# vs gathered window sums; chunked vs recurrent kernels when real kernels are present). Over
# <= 8 tokens with O(1) activations that is a few hundred ulps (fp32 eps 1.2e-7) at most; a
# real cache or padding bug (a lost conv row, a state from the wrong sequence) is O(1e-2).
TOL = dict(rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- contexts


def brief_context(spec, cf) -> dict:
    """The minimal render context the template documents (the agreed contract): the layer
    must render from exactly these keys."""
    f = spec.file
    return {
        "header": f"test render of {spec.name}",
        "spec_name": spec.name,
        "class_name": f.layer.class_name,
        "conv_size": f.layer.conv_size,
        "output_gate": f.layer.output_gate,
        "family": cf.family,
        "inputs": [{"name": n, "dim": s.shape[0], "norm": s.norm} for n, s in f.inputs.items()],
        "gates": [{"name": n, "shape": "channel" if g.shape else "scalar", "space": g.space, "param": g.param,
                   "optional": g.optional, "default": g.default} for n, g in f.gates.items()],
        "params": [{"name": n, "type": p.type, "default": p.default, "shape": list(p.shape), "positive": p.positive}
                   for n, p in f.params.items()],
        "state_names": list(f.states),
        "chunk_fn": f"chunk_{spec.name}",
        "recurrent_fn": f"fused_recurrent_{spec.name}",
    }


def full_context(spec, cf, path) -> dict | None:
    """What `gka-gen generate` renders with, when the codegen package provides it."""
    try:
        from gka_gen.codegen.context import package_context
    except ImportError:
        return None
    return package_context(spec, cf, read_yaml(path), header=f"test render of {spec.name}", backends=[],
                           has_layer=True)


STUB_OPS = '''
"""Test shim: the functional API of {name}, recording which entry point the layer called."""
{source}

CALLS = []


def {chunk}(*args, backend="auto", **kwargs):
    CALLS.append("chunk")
    return _chunk(*args, backend=backend, **kwargs)


def {recurrent}(*args, backend="auto", **kwargs):
    CALLS.append("recurrent")
    return _recurrent(*args, backend=backend, **kwargs)
'''

# The real generated ops when generated/<name>/ exists and imports (they honour
# backend="reference"); otherwise the spec's naive reference recurrence.
GENERATED_SOURCE = """from generated.{name}.ops import {chunk} as _chunk, {recurrent} as _recurrent"""
REFERENCE_SOURCE = """from gka_gen.reference import reference_op
from gka_gen.spec import load_spec

_ref = reference_op(load_spec({path!r}))


def _chunk(*args, backend="auto", **kwargs):
    return _ref(*args, **kwargs)


_recurrent = _chunk"""


class Variant:
    def __init__(self, name, module, ops, generated):
        self.name, self.module, self.ops, self.generated = name, module, ops, generated
        self.spec = load_spec(REPO / "specs" / f"{name}.yaml")
        self.cls = getattr(module, self.spec.file.layer.class_name)

    def make(self, seed=0, **kw):
        torch.manual_seed(seed)
        kw.setdefault("backend", "reference")
        layer = self.cls(hidden_size=HIDDEN, num_heads=HEADS, head_dim=HEAD_DIM, layer_idx=0, **kw)
        return layer.float()


def _generated_ops_import(name) -> bool:
    try:
        importlib.import_module(f"generated.{name}.ops")
    except Exception:  # not generated yet, or not importable here
        return False
    return True


@pytest.fixture(scope="session")
def variants(tmp_path_factory):
    """Every spec's layer rendered from the *current* template (a stale generated/ cannot hide a
    template change) into a temporary package, over the real ops where they exist."""
    root = tmp_path_factory.mktemp("layers")
    sys.path.insert(0, str(root))
    out = {}
    for path in SPEC_PATHS:
        spec = load_spec(path)
        cf = canonicalize(spec)
        names = dict(name=spec.name, path=str(path), chunk=f"chunk_{spec.name}",
                     recurrent=f"fused_recurrent_{spec.name}")
        generated = _generated_ops_import(spec.name)
        source = (GENERATED_SOURCE if generated else REFERENCE_SOURCE).format(**names)
        ctx = full_context(spec, cf, path) or brief_context(spec, cf)
        pkg = root / f"gkatest_{spec.name}"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "ops.py").write_text(STUB_OPS.format(source=source, **names))
        (pkg / "layer.py").write_text(render(TEMPLATE, **ctx))
        out[spec.name] = Variant(spec.name, importlib.import_module(f"gkatest_{spec.name}.layer"),
                                 importlib.import_module(f"gkatest_{spec.name}.ops"), generated)
    yield out
    sys.path.remove(str(root))


@pytest.fixture(params=NAMES)
def variant(request, variants):
    return variants[request.param]


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("path", SPEC_PATHS, ids=NAMES)
def test_template_renders_from_the_documented_context(path):
    """Both the documented minimal context and generate's full one render the same,
    valid module: the template reads nothing beyond its documented keys."""
    spec = load_spec(path)
    cf = canonicalize(spec)
    text = render(TEMPLATE, **brief_context(spec, cf))
    compile(text, f"{spec.name}/layer.py", "exec")
    assert f"class {spec.file.layer.class_name}(nn.Module)" in text
    assert not re.search(r"^\s*(from|import)\s+fla\b", text, re.M), "generated code must not import fla"
    full = full_context(spec, cf, path)
    if full is not None:
        assert render(TEMPLATE, **full) == text


def test_template_rejects_names_that_shadow_layer_code():
    spec = load_spec(SPEC_PATHS[0])
    ctx = brief_context(spec, canonicalize(spec))
    ctx["params"] = ctx["params"] + [{"name": "mode", "type": "float", "default": 1.0}]
    with pytest.raises(Exception, match="clashes"):
        render(TEMPLATE, **ctx)


# ----------------------------------------------------------------------------- layer


def test_forward_shapes_and_grads(variant):
    layer = variant.make()
    x = torch.randn(2, 8, HIDDEN, requires_grad=True)
    o, attn, cache = layer(x)
    assert o.shape == x.shape and o.dtype == x.dtype
    assert attn is None and cache is None
    (o * torch.randn_like(o)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    names = [n for n, _ in layer.named_parameters()]
    assert names, "layer has no parameters"
    for n, p in layer.named_parameters():
        assert p.grad is not None, f"{variant.name}: no gradient for {n}"
        assert torch.isfinite(p.grad).all(), f"{variant.name}: non-finite gradient for {n}"
        assert p.grad.abs().sum() > 0, f"{variant.name}: zero gradient for {n} (parameter unused?)"


def test_layer_structure_follows_spec(variant):
    layer = variant.make()
    f = variant.spec.file
    for n in f.inputs:
        assert hasattr(layer, f"{n}_proj")
        assert hasattr(layer, f"{n}_conv1d") == (f.layer.conv_size > 0)
    assert hasattr(layer, "o_gate_proj") == f.layer.output_gate
    no_conv = variant.make(conv_size=0, use_output_gate=False)
    assert not any("conv1d" in n for n, _ in no_conv.named_parameters())
    assert not hasattr(no_conv, "o_gate_proj")
    o, _, _ = no_conv(torch.randn(1, 5, HIDDEN))
    assert o.shape == (1, 5, HIDDEN) and torch.isfinite(o).all()


@torch.no_grad()
def test_bf16_layer_tracks_fp32(variant):
    """A bf16 layer (weights and activations) runs and stays near the fp32 one: gates are made
    in fp32 and the op accumulates in fp32, so only bf16 rounding of weights/activations
    (eps 2^-8 = 4e-3, through a few matmuls) separates them; 5e-2 of the output scale."""
    layer = variant.make().eval()
    x = torch.randn(2, 6, HIDDEN)
    ref, _, _ = layer(x)
    got, _, _ = layer.to(torch.bfloat16)(x.bfloat16())
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert (got.float() - ref).abs().max() <= 5e-2 * ref.abs().max()


@torch.no_grad()
def test_decode_matches_prefill(variant):
    layer = variant.make().eval()
    x = torch.randn(2, 8, HIDDEN)
    full, _, _ = layer(x)

    # Token by token from an empty cache.
    cache, steps = None, []
    for t in range(x.shape[1]):
        o, _, cache = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)
        steps.append(o)
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    assert isinstance(cache, LayerCache) and cache.get_seq_length() == x.shape[1]

    # Prefill 3, a chunk of 4 continuing from the cache (dense conv cache path), one step.
    variant.ops.CALLS.clear()
    outs, cache = [], LayerCache()
    for a, b in ((0, 3), (3, 7), (7, 8)):
        o, _, cache = layer(x[:, a:b], past_key_values=cache, use_cache=True)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), full, **TOL)
    # T == 1 with a cache takes the recurrent entry point, longer inputs the chunked one.
    assert variant.ops.CALLS == ["chunk", "chunk", "recurrent"]


@torch.no_grad()
def test_fused_recurrent_mode_matches_chunk(variant):
    x = torch.randn(2, 6, HIDDEN)
    a, _, _ = variant.make(seed=1)(x)
    b, _, _ = variant.make(seed=1, mode="fused_recurrent")(x)
    torch.testing.assert_close(a, b, **TOL)


@torch.no_grad()
def test_padding_mask_equals_unpadded_runs(variant):
    layer = variant.make().eval()
    T, pad = 7, 3
    x = torch.randn(2, T, HIDDEN)
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, :pad] = 0  # left padding, as fla's generation uses
    o, _, cache = layer(x, attention_mask=mask, use_cache=True)
    torch.testing.assert_close(o[0:1], layer(x[0:1])[0], **TOL)
    torch.testing.assert_close(o[1:2, pad:], layer(x[1:2, pad:])[0], **TOL)
    assert (o[1, :pad] == 0).all()

    # Decoding after a padded prefill: the mask grows by one valid column per step.
    y = torch.randn(2, 2, HIDDEN)
    steps = []
    for t in range(y.shape[1]):
        mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        s, _, cache = layer(y[:, t:t + 1], attention_mask=mask, past_key_values=cache, use_cache=True)
        steps.append(s)
    steps = torch.cat(steps, 1)
    ref0 = layer(torch.cat([x[0:1], y[0:1]], 1))[0][:, T:]
    ref1 = layer(torch.cat([x[1:2, pad:], y[1:2]], 1))[0][:, T - pad:]
    torch.testing.assert_close(steps[0:1], ref0, **TOL)
    torch.testing.assert_close(steps[1:2], ref1, **TOL)


def test_padding_mask_backward(variant):
    layer = variant.make()
    x = torch.randn(2, 5, HIDDEN, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    o, _, _ = layer(x, attention_mask=mask)
    o.sum().backward()
    assert (x.grad[1, :2] == 0).all()  # padding does not reach the output
    assert torch.isfinite(x.grad).all() and x.grad[1, 2:].abs().sum() > 0


def test_torch_compile(variant, monkeypatch):
    """torch.compile (inductor) runs the layer and agrees with eager (CPU, backend="reference").

    The op is made opaque to dynamo here (torch.compiler.disable), so what gets compiled is
    the layer's own code (projections, conv + cache plumbing, gates, norms). Inductor would
    otherwise unroll the reference op's Python loop over tokens and solver steps (minutes for
    the ridge specs), and that loop is not the layer's. Not fullgraph: the generated ops'
    torch.library custom ops are on their Triton path only, and the opaque op is a graph break.
    """
    torch._dynamo.reset()
    for fn in ("_chunk", "_recurrent"):
        monkeypatch.setattr(variant.ops, fn, torch.compiler.disable(getattr(variant.ops, fn)))
    layer = variant.make().eval()
    x = torch.randn(1, 4, HIDDEN)
    with torch.no_grad():
        ref, _, _ = layer(x)
        got, _, _ = torch.compile(layer)(x)
        torch.testing.assert_close(got, ref, **TOL)
        # A decoding step (T == 1 with a cache) compiles too and continues correctly.
        _, _, cache = layer(x[:, :3], use_cache=True)
        step, _, _ = torch.compile(layer)(x[:, 3:], past_key_values=cache, use_cache=True)
        torch.testing.assert_close(step, ref[:, 3:], **TOL)


def _triton_layer_or_skip(variant, **kw):
    """The layer on backend="triton", or a skip when that path cannot run in this process
    (no generated package, kernels not generated for the family, or triton imported without
    TRITON_INTERPRET=1 on a CPU machine; `make test` sets it)."""
    if not variant.generated:
        pytest.skip(f"generated/{variant.name} is not importable: no Triton kernels to run")
    layer = variant.make(backend="triton", **kw).eval()
    try:
        with torch.no_grad():
            layer(torch.randn(1, 1, HIDDEN))
    except (ValueError, RuntimeError) as e:
        if "Triton" not in str(e) and "TRITON" not in str(e):
            raise
        pytest.skip(f"Triton path unavailable here: {e}")
    return layer


@torch.no_grad()
def test_triton_backend_layer(variant):
    """The layer over the real chunked and recurrent kernels: same output as the reference
    backend, and decoding from a chunked prefill continues it (kernels' final states and the
    layer's conv cache hand over correctly)."""
    layer = _triton_layer_or_skip(variant)
    x = torch.randn(2, 6, HIDDEN)
    full, _, _ = layer(x)
    torch.testing.assert_close(full, variant.make(backend="reference").eval()(x)[0], **TOL)
    out, _, cache = layer(x[:, :4], use_cache=True)
    outs = [out]
    for t in (4, 5):
        o, _, cache = layer(x[:, t:t + 1], past_key_values=cache, use_cache=True)
        outs.append(o)
    torch.testing.assert_close(torch.cat(outs, 1), full, **TOL)


@torch.no_grad()
def test_torch_compile_fullgraph_triton(variants):
    """On the Triton path the ops are torch.library custom ops, so the whole layer (prefill,
    and a decoding step with a LayerCache) must compile without a graph break. One spec is
    enough for the layer code, which is the same template for all (~20 s in the interpreter)."""
    variant = variants["gated_deltanet" if "gated_deltanet" in variants else NAMES[0]]
    layer = _triton_layer_or_skip(variant)
    torch._dynamo.reset()
    x = torch.randn(2, 5, HIDDEN)
    ref, _, _ = layer(x)
    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x)[0], ref, **TOL)
    _, _, cache = layer(x[:, :4], use_cache=True)
    step, _, _ = compiled(x[:, 4:], past_key_values=cache, use_cache=True)
    torch.testing.assert_close(step, ref[:, 4:], **TOL)


# ----------------------------------------------------------------------------- runtime pieces


def test_short_conv_packed_and_cached_match_dense():
    torch.manual_seed(0)
    conv = ShortConvolution(6, 4)
    lens = [5, 0, 1, 3]
    seqs = [torch.randn(1, n, 6) for n in lens]
    packed = torch.cat(seqs, 1)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()])
    y, final = conv(packed, output_final_state=True, cu_seqlens=cu)
    for i, s in enumerate(seqs):
        ys, fs = conv(s, output_final_state=True)
        torch.testing.assert_close(y[:, cu[i]:cu[i + 1]], ys)
        torch.testing.assert_close(final[i:i + 1], fs)
    # Continuing each packed sequence from its cache == running it whole.
    more = [torch.randn(1, 2, 6) for _ in lens]
    y2, _ = conv(torch.cat(more, 1), cache=final, cu_seqlens=torch.arange(0, 2 * len(lens) + 1, 2))
    for i, (s, m) in enumerate(zip(seqs, more)):
        whole, _ = conv(torch.cat([s, m], 1))
        torch.testing.assert_close(y2[:, 2 * i:2 * i + 2], whole[:, -2:])


def test_layer_cache_interface():
    cache = LayerCache()
    assert len(cache) == 0
    cache.update(recurrent_state=1, conv_state=None, layer_idx=2, offset=3)
    assert len(cache) == 3 and cache[0] is None and cache[2]["recurrent_state"] == 1
    cache.update(recurrent_state=2, layer_idx=0, offset=3)
    assert cache.get_seq_length() == 3
