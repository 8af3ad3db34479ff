"""TileLang kernels, checked on a CPU machine (no GPU runs here: bench/tilelang_check.py does that).

* every TileLang program of every generated package (forward, and the chunked backward where it
  exists) lowers to CUDA source for sm_90 (inside a tvm Target context), at K = V = 64 and at
  K = V = 80 (not a power of two: tiles of 16);
* that source compiles with nvcc for sm_90a (compile only), where nvcc is installed, and the
  PTX still holds the tensor-core instructions the source asked for;
* chunk_bwd's host code (linear family) and chunk_fwd / chunk_bwd / fused_recurrent_fwd's (ridge
  family) launch each program with arguments that match its signature (CPU tensors, launches
  replaced by a check);
* the generated packages import, and say clearly why TileLang cannot run, where TileLang is not
  installed; a call that needs a kernel TileLang does not have yet raises, naming it.

Lowered sources are cached in pytest's cache folder, keyed by the TileLang version and the
generated kernel files, so the compile test (possibly on another xdist worker) and reruns reuse
them instead of lowering again.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import warnings
import sys
from pathlib import Path

import pytest
import torch

from gka_gen.codegen import op_runtime

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "generated"
PACKAGES = sorted(p.parent.parent.name for p in GENERATED.glob("*/tilelang_kernels/__init__.py"))
ALL_PACKAGES = sorted(p.parent.name for p in GENERATED.glob("*/ops.py"))
HEAD_DIMS = (64, 80)  # K = V
# the linear family (templates/tilelang/linear; decay none / scalar / channel)
LINEAR_PACKAGES = ["deltanet", "gated_deltanet", "gla", "kda"]
FWD_KERNELS = ["chunk_intra_fwd", "chunk_output_fwd", "chunk_state_fwd", "fused_recurrent_fwd"]
BWD_KERNELS = ["chunk_grad_bwd", "chunk_state_bwd"]
# the ridge family (templates/tilelang/ridge): chunked forward (two state scans with one program,
# the fused solve + readout), chunked backward, and the token-by-token forward
RIDGE_PACKAGES = ["gka", "mesanet"]
RIDGE_KERNELS = ["chunk_state_fwd", "chunk_ridge_fwd", "fused_recurrent_fwd", "chunk_ridge_bwd_solve", "chunk_dh_bwd",
                 "chunk_du_bwd", "chunk_ridge_bwd_dk"]

needs_tilelang = pytest.mark.skipif(importlib.util.find_spec("tilelang") is None, reason="TileLang is not installed")


def _sources_key(name: str, K: int) -> str:
    import tilelang

    h = hashlib.sha256(f"{tilelang.__version__} K={K}".encode())
    for f in sorted((GENERATED / name / "tilelang_kernels").glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:24]


@pytest.fixture(scope="session")
def lowered(request):
    """lowered(name, K) -> {kernel name: CUDA source} of package `name` at K = V."""
    cache_dir = Path(request.config.cache.mkdir("tilelang_lowered"))

    def get(name: str, K: int) -> dict[str, str]:
        path = cache_dir / f"{name}-{_sources_key(name, K)}.json"
        if path.is_file():
            return json.loads(path.read_text())
        import tilelang
        from tilelang import tvm

        pkg = importlib.import_module(f"generated.{name}.tilelang_kernels")
        sources = {}
        with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}) as target:
            for kernel, func in pkg.programs(K, K).items():
                sources[kernel] = tilelang.lower(func, target=target).kernel_source
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(sources))
        os.replace(tmp, path)  # atomic: another worker may be writing the same entry
        return sources

    return get


def test_tilelang_packages():
    """What the templates cover: the linear family (templates/tilelang/linear) and the ridge family
    (templates/tilelang/ridge)."""
    assert PACKAGES == ["deltanet", "gated_deltanet", "gka", "gla", "kda", "mesanet"]


def _kernels_of(name: str) -> list[str]:
    """The TileLang programs package `name` should have (what programs() returns)."""
    if name in RIDGE_PACKAGES:
        return RIDGE_KERNELS
    return FWD_KERNELS + (BWD_KERNELS if name in LINEAR_PACKAGES else [])


@needs_tilelang
@pytest.mark.parametrize("K", HEAD_DIMS)
@pytest.mark.parametrize("name", PACKAGES)
def test_lowers_to_cuda_source(lowered, name, K):
    sources = lowered(name, K)
    # one program per kernel launched by chunk_fwd, the recurrent one, and chunk_bwd's two (it
    # also relaunches chunk_intra_fwd / chunk_state_fwd to recompute the forward's intermediates);
    # the ridge packages: RIDGE_KERNELS
    assert sorted(sources) == sorted(_kernels_of(name))
    for kernel, src in sources.items():
        assert 'extern "C" __global__ void __launch_bounds__' in src, kernel
        assert f"void {kernel}_kernel(" in src, kernel
        # a producer warp's private copy of a consumer buffer: TileLang's warp specialization gave
        # the producer a statement that is not a plain load (test_state_scan_stages_...)
        assert "_producer_ws" not in src, kernel


@needs_tilelang
def test_every_searched_config_lowers():
    """Each config `gka-gen autotune --backend tilelang` may try (configs.TILELANG_SPACES) lowers for
    sm_90 and launches that many threads: a candidate that cannot would only fail on the GPU,
    mid-search. deltanet at K = V = 64 (the spaces are the same for the linear family). The state
    scan's T.copy loads make TileLang add producer threads that issue them, as many as the
    program's own."""
    import tilelang
    from tilelang import tvm

    from gka_gen.autotune import configs

    pkg = importlib.import_module("generated.deltanet.tilelang_kernels")
    with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}) as target:
        for kernel in configs.kernels("linear", "tilelang"):
            default = pkg.common.default_config(kernel, 64, 64)
            for cfg in configs.candidates("linear", kernel, 64, 64, default, "tilelang")[1:]:
                src = tilelang.lower(pkg.programs(64, 64, configs={kernel: cfg})[kernel], target=target).kernel_source
                producer = cfg["threads"] if kernel == "chunk_state_fwd" else 0
                assert f"__launch_bounds__({cfg['threads'] + producer}" in src, (kernel, cfg)


@needs_tilelang
@pytest.mark.parametrize("name", LINEAR_PACKAGES)
def test_state_scan_stages_prefetch_the_next_chunks(name):
    """num_stages = n keeps n chunks' loads in flight: the lowered scan indexes an n-slot ring of
    shared buffers by the chunk counter (i_c & 1 for two, i_c % 3 for three); one stage has no ring."""
    import tilelang
    from tilelang import tvm

    pkg = importlib.import_module(f"generated.{name}.tilelang_kernels")
    src = {}
    with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}) as target:
        for n in (1, 2, 3):
            prog = pkg.programs(64, 64, configs={"chunk_state_fwd": {"num_stages": n}})["chunk_state_fwd"]
            src[n] = tilelang.lower(prog, target=target).kernel_source
    assert "tma_load" in src[2] and "cp_async" in src[2]  # asynchronous loads
    # TileLang hands the producer warps every statement that reads global memory into shared; one
    # that also reads a consumer's fragment gets a private, never-written copy of it (named
    # *_producer_ws), and the scan's V' came out wrong on the H200 (fwd.py.j2, chunk_state_fwd_program)
    assert all("_producer_ws" not in s for s in src.values())
    assert src[1].count("(i_c & 1)") <= 2 < src[2].count("(i_c & 1)")  # one stage: mbarrier parity only
    assert "i_c % 3" not in src[2] and "i_c % 3" in src[3]


CUDA_FLAGS = ["-std=c++20", "-w", "-Xcudafe", "--diag_suppress=177", "-c",
              # sm_90a, as TileLang itself compiles for an H100: the wgmma/TMA templates it emits for
              # "sm_90" compile to traps, silently, under plain -arch=sm_90 (docs/backends.md)
              "-gencode", "arch=compute_90a,code=sm_90a"]


@needs_tilelang
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("K", HEAD_DIMS)
@pytest.mark.parametrize("name", PACKAGES)
def test_source_compiles_with_nvcc(lowered, name, K, tmp_path):
    from tilelang.env import CUTLASS_INCLUDE_DIR, TILELANG_TEMPLATE_PATH

    sources = lowered(name, K)
    # one translation unit per package: the headers (cutlass, tl_templates) dominate nvcc's time
    cu = tmp_path / f"{name}_K{K}.cu"
    cu.write_text("\n".join(sources.values()))
    r = subprocess.run(["nvcc", *CUDA_FLAGS, f"-I{CUTLASS_INCLUDE_DIR}", f"-I{TILELANG_TEMPLATE_PATH}",
                        "--keep", f"--keep-dir={tmp_path}", str(cu), "-o", str(tmp_path / "out.o")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    ptx = "".join(p.read_text() for p in tmp_path.glob("*.ptx"))
    for kernel, src in sources.items():
        assert f".entry {kernel}_kernel(" in ptx, kernel
    if any("tl::wgmma_ss" in src for src in sources.values()):
        assert "wgmma.mma_async" in ptx
    if any("tl::mma_sync" in src for src in sources.values()):
        assert "mma.sync.aligned" in ptx


_TORCH_DTYPES = {torch.bfloat16: "bfloat16", torch.float32: "float32", torch.int32: "int32"}


def _checked_compile(launched: list):
    """A stand-in for common.compiled: builds the prim_func, and its "kernel" checks each launch's
    arguments against the signature (count, dtypes, contiguity, static dims, and every dynamic dim
    bound consistently across the call's tensors), then records the program's name."""

    def checked(program, **params):
        func = program(**params)

        def launch(*args):
            assert len(args) == len(func.params), program.__name__
            dims = {}
            for param, arg in zip(func.params, args):
                buf = func.buffer_map.get(param)
                if buf is None:
                    assert not isinstance(arg, torch.Tensor), (program.__name__, param)
                    continue
                what = (program.__name__, buf.name, tuple(arg.shape), list(buf.shape))
                assert _TORCH_DTYPES[arg.dtype] == str(buf.dtype) and arg.is_contiguous(), what
                assert arg.dim() == len(buf.shape), what
                for size, dim in zip(arg.shape, buf.shape):
                    static = hasattr(dim, "value")
                    assert (size == dim.value) if static else dims.setdefault(str(dim), size) == size, what
            launched.append(program.__name__)

        return launch

    return checked


@needs_tilelang
@pytest.mark.parametrize("name", LINEAR_PACKAGES)
def test_chunk_bwd_launches_match_the_programs(name, monkeypatch):
    """chunk_bwd's host code, run on CPU tensors with each launch replaced by a check of its
    arguments against the prim_func's signature: count, dtypes, static dims, and every dynamic dim
    (tokens, sequences, chunks) bound consistently across the call's tensors. What a GPU run would
    otherwise find first, as a TVM argument error."""
    from gka_gen.spec import load_spec
    from gka_gen.testing import make_inputs

    bwd = importlib.import_module(f"generated.{name}.tilelang_kernels.bwd")
    launched = []
    monkeypatch.setattr(bwd, "compiled", _checked_compile(launched))
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    for cu, with_states in ((None, True), ([0, 10, 100, 130], False)):
        B, T = (2, 100) if cu is None else (1, 130)
        args = make_inputs(spec, B=B, T=T, H=2, K=80, V=80, dtype=torch.bfloat16, device="cpu", cu_seqlens=cu,
                           initial_state=with_states)
        N = B if cu is None else len(cu) - 1
        dht = torch.randn(N, 2, 80, 80) if with_states else None
        grads = bwd.chunk_bwd(args["q"], args["k"], args["v"], args.get("g"), args.get("beta"), 0.1,
                              args.get("initial_state"), args.get("cu_seqlens"), torch.randn_like(args["v"]), dht, {})
        for grad, x in zip(grads, ("q", "k", "v", "g", "beta", "initial_state")):
            assert (grad is None) == (args.get(x) is None), x
            if grad is not None:
                want = torch.float32 if x == "initial_state" else args[x].dtype
                assert grad.shape == args[x].shape and grad.dtype == want, x
    assert launched == ["chunk_intra_fwd_program", "chunk_state_fwd_program", "chunk_state_bwd_program",
                        "chunk_grad_bwd_program"] * 2


@needs_tilelang
@pytest.mark.parametrize("name", RIDGE_PACKAGES)
def test_ridge_fused_recurrent_launch_matches_the_program(name, monkeypatch):
    """The ridge fused_recurrent_fwd's host code, fed by the ops layer's own argument conversion
    (_resolve_defaults, _kernel_args, the state pair) on CPU tensors, with the launch replaced by a
    check against the prim_func's signature: each variant's optional gates (g, gk, beta, alpha,
    lamb) and scalars (ridge_ratio) must line up with the parameters the template rendered."""
    import inspect

    from gka_gen.spec import load_spec
    from gka_gen.testing import make_inputs

    ops = importlib.import_module(f"generated.{name}.ops")
    rec = importlib.import_module(f"generated.{name}.tilelang_kernels.recurrent")
    launched = []
    monkeypatch.setattr(rec, "compiled", _checked_compile(launched))
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    op = f"fused_recurrent_{name}"
    defaults = {k: p.default for k, p in inspect.signature(getattr(ops, op)).parameters.items()
                if p.default is not inspect.Parameter.empty and k not in ("backend", "cp_group")}
    for cu, with_states, dtype in ((None, True, torch.bfloat16), ([0, 10, 100, 130], False, torch.float32)):
        B, T = (2, 100) if cu is None else (1, 130)
        a = {**defaults, **make_inputs(spec, B=B, T=T, H=2, K=80, V=48, dtype=dtype, device="cpu", cu_seqlens=cu,
                                       initial_state=with_states)}
        a["output_final_state"] = with_states
        ops._resolve_defaults(a, ops._check(op, a))
        h0 = op_runtime.unpack_state(a["initial_state"], 2)
        o, final = rec.fused_recurrent_fwd(*ops._kernel_args(a), op_runtime.pack_state(h0), with_states,
                                           a.get("cu_seqlens"))
        assert o.shape == a["v"].shape and o.dtype == dtype
        N = B if cu is None else len(cu) - 1
        if with_states:
            assert [tuple(s.shape) for s in final] == [(N, 2, 80, 80), (N, 2, 80, 48)]
        else:
            assert final is None
    assert launched == ["fused_recurrent_fwd_program"] * 2
    assert rec.shared_bytes(128, 128) <= rec.SMEM_LIMIT < rec.shared_bytes(256, 256)


@needs_tilelang
@pytest.mark.parametrize("name", RIDGE_PACKAGES)
def test_ridge_chunk_launches_match_the_programs(name, monkeypatch):
    """The ridge chunk_fwd and chunk_bwd host code, fed by the ops layer's argument conversion on CPU
    tensors, with every launch replaced by a check against its prim_func's signature: fixed-length
    with initial and final states (bf16), varlen and ragged without them (fp32), K = 80 != V = 48."""
    import inspect

    from gka_gen.spec import load_spec
    from gka_gen.testing import make_inputs

    ops = importlib.import_module(f"generated.{name}.ops")
    fwd = importlib.import_module(f"generated.{name}.tilelang_kernels.fwd")
    bwd = importlib.import_module(f"generated.{name}.tilelang_kernels.bwd")
    launched = []
    monkeypatch.setattr(fwd, "compiled", _checked_compile(launched))
    monkeypatch.setattr(bwd, "compiled", _checked_compile(launched))
    spec = load_spec(ROOT / "specs" / f"{name}.yaml")
    op = f"chunk_{name}"
    defaults = {k: p.default for k, p in inspect.signature(getattr(ops, op)).parameters.items()
                if p.default is not inspect.Parameter.empty and k not in ("backend", "cp_group")}
    K, V = 80, 48
    for cu, with_states, dtype in ((None, True, torch.bfloat16), ([0, 10, 100, 130], False, torch.float32)):
        B, T = (2, 100) if cu is None else (1, 130)
        N = B if cu is None else len(cu) - 1
        a = {**defaults, **make_inputs(spec, B=B, T=T, H=2, K=K, V=V, dtype=dtype, device="cpu", cu_seqlens=cu,
                                       initial_state=with_states)}
        a["output_final_state"] = with_states
        ops._resolve_defaults(a, ops._check(op, a))
        kargs = ops._kernel_args(a)
        h0 = op_runtime.pack_state(op_runtime.unpack_state(a["initial_state"], 2)) if with_states else None
        o, final, saved = fwd.chunk_fwd(*kargs, h0, with_states, a.get("cu_seqlens"))
        assert o.shape == a["v"].shape and o.dtype == dtype
        assert saved["x"].shape == a["q"].shape and saved["nrm"].shape == a["q"].shape[:3]
        if with_states:
            assert [tuple(s.shape) for s in final] == [(N, 2, K, K), (N, 2, K, V)]
        else:
            assert final is None
        dht = (torch.randn(N, 2, K, K), torch.randn(N, 2, K, V)) if with_states else None
        grads = bwd.chunk_bwd(*kargs, h0, a.get("cu_seqlens"), torch.randn_like(a["v"]), dht, saved)
        names = ("q", "k", "v", "g", "gk", "beta", "alpha", "lamb")
        for grad, x, arg in zip(grads, names, kargs):
            assert (grad is None) == (arg is None), x
            if grad is not None:
                assert grad.shape == arg.shape and grad.dtype == arg.dtype, x
        if with_states:
            assert [tuple(s.shape) for s in grads[8]] == [(N, 2, K, K), (N, 2, K, V)]
        else:
            assert grads[8] is None
    state = ["chunk_state_fwd_program"] * 2
    assert launched == (state + ["chunk_ridge_fwd_program"] + state
                        + ["chunk_ridge_bwd_solve_program", "chunk_dh_bwd_program", "chunk_du_bwd_program",
                           "chunk_ridge_bwd_dk_program"]) * 2
    with pytest.raises(ValueError, match="K=256 > 128"):
        fwd.check_shape(256)


# ----------------------------------------------------------------------------- without TileLang

_WITHOUT_TILELANG = """
import sys
sys.modules["tilelang"] = None   # `import tilelang` raises, find_spec("tilelang") is None
sys.modules["tvm"] = None
import torch
import gka_gen, gka_gen.codegen.generate
out = {}
for name in NAMES:
    ops = __import__(f"generated.{name}.ops", fromlist=["ops"])
    tl = ops._tilelang_kernels
    out[name] = None if tl is None else [list(tl.KERNELS), tl.unavailable()]
print(json.dumps(out))
"""


def _run_python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", "import json\n" + code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-4000:]
    return r.stdout.strip().splitlines()[-1]


def test_packages_import_without_tilelang():
    out = json.loads(_run_python(f"NAMES = {ALL_PACKAGES!r}\n" + _WITHOUT_TILELANG))
    assert sorted(out) == ALL_PACKAGES
    for name, got in out.items():
        if name not in PACKAGES:
            assert got is None, name
            continue
        kernels, why = got
        assert kernels == ["chunk_fwd", "fused_recurrent_fwd", "chunk_bwd"], name
        assert "TileLang is not installed" in why


def test_importing_a_package_does_not_import_tilelang():
    """TileLang takes seconds to import (TVM): only a TileLang kernel call may pay for it."""
    out = _run_python("import sys\nimport generated.kda, generated.gated_deltanet\n"
                      "print(json.dumps([m for m in sys.modules if m.split('.')[0] in ('tilelang', 'tvm')]))")
    assert json.loads(out) == []


# ----------------------------------------------------------------------------- routing


class _FakeTileLang:
    KERNELS = ("chunk_fwd", "fused_recurrent_fwd")

    def __init__(self, why=None):
        self.why = why

    def unavailable(self):
        return self.why


def test_tilelang_backend_routing():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    kw = dict(triton_pkg=object(), triton_error=None, interpreted=False)
    assert op_runtime.resolve_backend("tilelang", cuda, "op", tilelang_pkg=_FakeTileLang(), **kw) == "tilelang"
    # without a measured race (race=None) auto stays on Triton, installed or not (with one: below)
    assert op_runtime.resolve_backend("auto", cuda, "op", tilelang_pkg=_FakeTileLang(), **kw) == "triton"
    with pytest.raises(RuntimeError, match="cannot run here: TileLang is not installed"):
        op_runtime.resolve_backend("tilelang", cuda, "op", tilelang_pkg=_FakeTileLang("TileLang is not installed"),
                                   **kw)
    with pytest.raises(ValueError, match="need CUDA tensors"):
        op_runtime.resolve_backend("tilelang", cpu, "op", tilelang_pkg=_FakeTileLang(), **kw)
    with pytest.raises(ValueError, match="no TileLang kernels were generated"):
        op_runtime.resolve_backend("tilelang", cuda, "op", tilelang_pkg=None, **kw)


def _resolve(race, pkg, kernels=("chunk_fwd",), device="cuda"):
    return op_runtime.resolve_backend("auto", torch.device(device), "chunk_x", triton_pkg=object(), triton_error=None,
                                      tilelang_pkg=pkg, interpreted=False, race=lambda: race, kernels=kernels)


def test_auto_picks_tilelang_only_where_it_won_and_can_run(monkeypatch):
    """auto with a measured race (tests/test_autotune.py: where the race comes from)."""
    monkeypatch.setattr(op_runtime, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _resolve("tilelang", _FakeTileLang()) == "tilelang"
        assert _resolve("triton", _FakeTileLang()) == "triton"
        assert _resolve(None, _FakeTileLang()) == "triton"  # nothing measured
        assert _resolve("tilelang", None) == "triton"  # no TileLang kernels generated
        assert _resolve("tilelang", _FakeTileLang(), kernels=("chunk_fwd", "chunk_bwd")) == "triton"  # no bwd
        assert _resolve("tilelang", _FakeTileLang(), device="cpu") == "reference"  # CPU, no interpreter
    with pytest.warns(RuntimeWarning, match="measured the TileLang kernels faster.*not installed; using Triton") as rec:
        for _ in range(3):
            assert _resolve("tilelang", _FakeTileLang("TileLang is not installed")) == "triton"
    assert len(rec) == 1  # once per op


def test_a_missing_kernel_is_an_error_that_names_it():
    pkg = _FakeTileLang()
    op_runtime.require_kernels(pkg, "chunk_x", "x", op_runtime.call_parts("chunk", False)[0])
    with pytest.raises(NotImplementedError, match=r"has no chunk_bwd kernel yet \(a gradient needs chunk_bwd\).*"
                                                  r"backend='triton', or call it under torch.no_grad\(\)"):
        op_runtime.require_kernels(pkg, "chunk_x", "x", op_runtime.call_parts("chunk", True)[0])
    pkg.KERNELS = ("chunk_fwd",)
    with pytest.raises(NotImplementedError, match="has no fused_recurrent_fwd kernel yet; it has chunk_fwd"):
        op_runtime.require_kernels(pkg, "fused_recurrent_x", "x", op_runtime.call_parts("fused_recurrent", True)[0])


def test_needs_grad():
    x = torch.zeros(2, requires_grad=True)
    assert op_runtime.needs_grad({"q": x, "g": None})
    assert op_runtime.needs_grad({"initial_state": (torch.zeros(1), x)})
    assert not op_runtime.needs_grad({"q": x.detach(), "scale": 1.0})
    with torch.no_grad():
        assert not op_runtime.needs_grad({"q": x})


@needs_tilelang
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_pipelined_state_scans_compile_with_nvcc(tmp_path):
    """The deeper pipelines the search may pick (num_stages 2 and 3) compile for sm_90a too; the
    lowering test above only reads their source. One translation unit for all four packages."""
    import tilelang
    from tilelang import tvm
    from tilelang.env import CUTLASS_INCLUDE_DIR, TILELANG_TEMPLATE_PATH

    sources = []
    with tvm.target.Target({"kind": "cuda", "arch": "sm_90"}) as target:
        for name in LINEAR_PACKAGES:
            pkg = importlib.import_module(f"generated.{name}.tilelang_kernels")
            for n in (2, 3):
                prog = pkg.programs(64, 64, configs={"chunk_state_fwd": {"num_stages": n}})["chunk_state_fwd"]
                src = tilelang.lower(prog, target=target).kernel_source
                sources.append(src.replace("chunk_state_fwd_kernel", f"chunk_state_fwd_kernel_{name}_{n}"))
    cu = tmp_path / "pipelined.cu"
    cu.write_text("\n".join(sources))
    r = subprocess.run(["nvcc", *CUDA_FLAGS, f"-I{CUTLASS_INCLUDE_DIR}", f"-I{TILELANG_TEMPLATE_PATH}", str(cu),
                        "-o", str(tmp_path / "out.o")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
