"""gka_gen.autotune without a GPU: the tuned-file format, loader, fallbacks, invalidation, shape
buckets, the search's bookkeeping, and one end-to-end search in the Triton interpreter."""
import importlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gka_gen import resources  # noqa: E402
from gka_gen.autotune import cache, configs, lookup, prefilter, tune  # noqa: E402

NAMES = ["deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet"]
DEFAULT = {"BK": 64, "BV": 64, "num_warps": 4}


# ----------------------------------------------------------------------------- names, buckets
def test_gpu_names_become_folder_names():
    assert cache.sanitize_gpu_name("NVIDIA H200") == "NVIDIA_H200"
    assert cache.sanitize_gpu_name("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
    assert cache.sanitize_gpu_name(" NVIDIA A100-SXM4-40GB ") == "NVIDIA_A100-SXM4-40GB"
    assert cache.sanitize_gpu_name("weird/../name: x") == "weird_.._name_x"
    with pytest.raises(ValueError):
        cache.sanitize_gpu_name(" / ")
    p = cache.tuned_path(Path("autotune"), "NVIDIA H200", "kda", "2ff1ee236694")
    assert p == Path("autotune/NVIDIA_H200/kda-2ff1ee236694.json")


def test_spec_hash_is_the_generated_packages():
    from generated.kda import spec as kda_spec

    assert cache.spec_hash(ROOT / "specs" / "kda.yaml") == kda_spec.SPEC_HASH


def test_t_buckets_round_in_log_scale():
    assert [cache.t_bucket(t) for t in (1, 2048, 2800, 3000, 4096, 5000, 6000, 16384)] == \
        [1, 2048, 2048, 4096, 4096, 4096, 8192, 16384]
    assert cache.bucket_key("bf16", 128, 64, 3000) == "bf16/K128/V64/T4096"
    assert cache.parse_bucket("bf16/K128/V64/T4096") == ("bf16", 128, 64, 4096)
    with pytest.raises(cache.CacheError):
        cache.parse_bucket("bf16/K128/T4096")
    with pytest.raises(ValueError):
        cache.bucket_key("int8", 128, 128, 4096)


def test_nearest_bucket_needs_same_dtype_k_v_and_takes_the_closest_t():
    keys = ["bf16/K128/V128/T2048", "bf16/K128/V128/T8192", "bf16/K64/V64/T4096", "fp32/K128/V128/T4096"]
    assert cache.nearest_bucket(keys, "bf16", 128, 128, 2500) == "bf16/K128/V128/T2048"
    assert cache.nearest_bucket(keys, "bf16", 128, 128, 6000) == "bf16/K128/V128/T8192"
    assert cache.nearest_bucket(keys, "bf16", 128, 128, 4096) == "bf16/K128/V128/T2048"  # a tie: the smaller
    assert cache.nearest_bucket(keys, "bf16", 128, 128, 100000) == "bf16/K128/V128/T8192"
    assert cache.nearest_bucket(keys, "fp32", 128, 128, 64) == "fp32/K128/V128/T4096"
    assert cache.nearest_bucket(keys, "bf16", 128, 64, 4096) is None
    assert cache.nearest_bucket(keys, "fp16", 64, 64, 4096) is None


# ----------------------------------------------------------------------------- the file
KDA_KERNELS = lookup.package_kernels_hashes("generated.kda")


def _table(spec="kda", h="aaaaaaaaaaaa", buckets=None, kernels=KDA_KERNELS):
    t = cache.new_table(spec, h, kernels, "NVIDIA H200", {"torch": "2.11"}, "2026-01-01T00:00:00+00:00")
    t["backends"]["triton"] = buckets if buckets is not None else {
        "bf16/K128/V128/T4096": {"shape": {}, "kernels": {"chunk_grad_bwd": {"config": {"BK": 32, "num_warps": 8}}}},
        "bf16/K128/V128/T16384": {"shape": {}, "kernels": {"chunk_grad_bwd": {"config": {"BK": 16}}}},
    }
    return t


def test_save_load_round_trip_and_validation(tmp_path):
    p = tmp_path / "NVIDIA_H200" / "kda-aaaaaaaaaaaa.json"
    cache.save(p, _table())
    assert cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS) == (_table(), {})
    assert [f.name for f in p.parent.iterdir()] == [p.name]  # no temporary file left behind
    with pytest.raises(cache.CacheError, match="spec hash"):
        cache.load(p, "kda", "bbbbbbbbbbbb", KDA_KERNELS)
    with pytest.raises(cache.CacheError, match="spec"):
        cache.load(p, "gla", "aaaaaaaaaaaa", KDA_KERNELS)
    cache.save(p, {**_table(), "kernels_hash": "0" * 12})  # format 1's one hash over both backends
    with pytest.raises(cache.CacheError, match="kernels_hash"):
        cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS)
    p.write_text("{not json")
    with pytest.raises(cache.CacheError, match="JSON"):
        cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS)
    for bad in ({"BK": "32"}, {"BK": 3.5}, {"BK": True}, {}):
        cache.save(p, _table(buckets={"bf16/K128/V128/T4096": {"kernels": {"k": {"config": bad}}}}))
        with pytest.raises(cache.CacheError, match="config"):
            cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS)
    for bad in ("9.0", [9], [9, "0"]):
        cache.save(p, {**_table(), "capability": bad})
        with pytest.raises(cache.CacheError, match="capability"):
            cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS)
    for bad in ({"triton": {"bf16/K128/V128/T4096": {"kernels": {"k": {"BK": "32"}}}}}, {"triton": []},
                {"triton": {"bf16/K128/V128/T4096": {"kernels": {}, "shape": {"dtype": "bf16", "B": 0}}}}):
        cache.save(p, {**_table(), "prior": bad})
        with pytest.raises(cache.CacheError, match="prior"):
            cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS)
    cache.save(p, {**_table(), "format": 99})
    with pytest.raises(cache.CacheError, match="format"):
        cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS)
    with pytest.raises(FileNotFoundError):
        cache.load(tmp_path / "missing.json", "kda", "aaaaaaaaaaaa", KDA_KERNELS)


# ----------------------------------------------------------------------------- the run-time lookup
@pytest.fixture
def on_h200(tmp_path, monkeypatch):
    """lookup as on a CUDA device named 'NVIDIA H200', reading tuned files from tmp_path."""
    monkeypatch.setenv("GKA_GEN_AUTOTUNE_DIR", str(tmp_path))
    monkeypatch.delenv("GKA_GEN_AUTOTUNE", raising=False)
    monkeypatch.setattr(lookup, "gpu_name", lambda x: "NVIDIA H200")
    monkeypatch.setattr(lookup, "_WARNED", set())
    lookup.invalidate()
    yield tmp_path
    lookup.invalidate()


def _ask(kernel="chunk_grad_bwd", h="aaaaaaaaaaaa", T=4096, K=128, dtype=torch.bfloat16):
    x = torch.empty(1, dtype=dtype)
    return lookup.launch_config("kda", h, "generated.kda", kernel, DEFAULT, x=x, K=K, V=128, T=T)


def test_lookup_uses_the_tuned_config_of_the_nearest_bucket(on_h200):
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"), _table())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good file: no warning
        assert _ask(T=4096) == {"BK": 32, "BV": 64, "num_warps": 8}  # tuned values, default for BV
        assert _ask(T=3000) == {"BK": 32, "BV": 64, "num_warps": 8}
        assert _ask(T=12000) == {"BK": 16, "BV": 64, "num_warps": 4}
        assert _ask(kernel="chunk_state_bwd") == DEFAULT  # a kernel the file does not name
        assert _ask(K=64) == DEFAULT  # no bucket with this K
        assert _ask(dtype=torch.float32) == DEFAULT


def test_lookup_never_adds_keys_and_leaves_the_default_alone(on_h200):
    t = _table(buckets={"bf16/K128/V128/T4096": {"kernels": {"chunk_grad_bwd": {"config": {"BK": 16, "BOGUS": 1}}}}})
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"), t)
    got = _ask()
    assert got == {"BK": 16, "BV": 64, "num_warps": 4}
    got["BK"] = 999  # callers may change what they get
    assert _ask()["BK"] == 16 and DEFAULT["BK"] == 64


def test_missing_file_falls_back_with_one_warning(on_h200):
    with pytest.warns(RuntimeWarning, match="no tuned launch configs for kda") as rec:
        assert _ask() == DEFAULT
        assert _ask(T=16384) == DEFAULT
        assert _ask(kernel="chunk_state_bwd") == DEFAULT
    assert len(rec) == 1


def test_a_gpu_without_a_file_borrows_one_of_the_same_compute_capability(on_h200, monkeypatch):
    """An H100 (sm_90) without a file of its own runs the H200's configs, with one warning; a GPU of
    another compute capability does not; GKA_GEN_AUTOTUNE=1 still tunes for the GPU at hand."""
    h100 = "NVIDIA H100 80GB HBM3"
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"), {**_table(), "capability": [9, 0]})
    monkeypatch.setattr(lookup, "gpu_name", lambda x: h100)
    monkeypatch.setitem(lookup._CAPABILITIES, h100, [9, 0])
    with pytest.warns(RuntimeWarning, match="using those tuned on NVIDIA H200 .*same compute capability 9.0") as rec:
        assert _ask()["BK"] == 32 and _ask(T=16384)["BK"] == 16
    assert len(rec) == 1 and lookup.borrowed_from("kda", "aaaaaaaaaaaa", h100) == "NVIDIA H200"
    searched = []
    monkeypatch.setattr(lookup, "_tune_now", lambda *a: searched.append(a[4:8]) or {})
    monkeypatch.setenv("GKA_GEN_AUTOTUNE", "1")
    lookup.invalidate()
    assert _ask() == DEFAULT and searched == [("bf16", 128, 128, 4096)]  # tuned here, not borrowed
    monkeypatch.delenv("GKA_GEN_AUTOTUNE")
    monkeypatch.setitem(lookup._CAPABILITIES, h100, [8, 0])
    lookup.invalidate()
    with pytest.warns(RuntimeWarning, match="no tuned launch configs for kda"):
        assert _ask() == DEFAULT


def test_corrupt_file_falls_back_with_one_warning(on_h200):
    p = cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa")
    p.parent.mkdir(parents=True)
    p.write_text('{"format": 1, "spec": "kda"')
    with pytest.warns(RuntimeWarning, match="ignoring .*not valid JSON") as rec:
        assert _ask() == DEFAULT
        assert _ask(T=16384) == DEFAULT
    assert len(rec) == 1


def test_changed_spec_hash_invalidates_the_old_file(on_h200):
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"), _table())
    assert _ask(h="aaaaaaaaaaaa")["BK"] == 32
    with pytest.warns(RuntimeWarning, match="only for other versions of the spec: kda-aaaaaaaaaaaa.json"):
        assert _ask(h="bbbbbbbbbbbb") == DEFAULT
    # a file renamed to the new hash still carries the old one inside: refused too
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "cccccccccccc"), _table())
    with pytest.warns(RuntimeWarning, match="spec hash"):
        assert _ask(h="cccccccccccc") == DEFAULT


def test_changed_kernel_sources_invalidate_the_file(on_h200):
    """Same spec, other templates: a config tuned for other kernel code may not even fit now."""
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"), _table(kernels={"triton": "0" * 12}))
    with pytest.warns(RuntimeWarning, match="ignoring the triton configs.*other triton kernel sources"):
        assert _ask() == DEFAULT


def test_each_backend_is_voided_by_its_own_kernel_sources(tmp_path):
    """A tuned file keeps one kernels hash per backend: new TileLang code drops the file's TileLang
    entries only, and the Triton search (the expensive one) still serves."""
    p = tmp_path / "kda.json"
    table = _table()
    table["backends"]["tilelang"] = {"bf16/K128/V128/T4096": {"shape": {}, "kernels": {}, "phases": {"fwd": 1.0}}}
    cache.save(p, table)
    now = {**KDA_KERNELS, "tilelang": "0" * 12}
    data, stale = cache.load(p, "kda", "aaaaaaaaaaaa", now)
    assert set(data["backends"]) == {"triton"} and data["backends"]["triton"] == table["backends"]["triton"]
    assert list(stale) == ["tilelang"] and "other tilelang kernel sources" in stale["tilelang"]
    data, stale = cache.load(p, "kda", "aaaaaaaaaaaa", {**KDA_KERNELS, "triton": "0" * 12})
    assert set(data["backends"]) == {"tilelang"} and list(stale) == ["triton"]
    # the voided search's picks stay on as `prior` (nothing launches with them; --recheck reads them)
    assert data["prior"] == {"triton": {key: {"shape": b.get("shape"), "kernels": {k: e["config"] for k, e in
                                                                                b["kernels"].items()}}
                                        for key, b in table["backends"]["triton"].items()}}
    lines = []  # a search resumes the file: the stale backend starts over, the other is kept
    table = tune._open_table(p, "kda", "aaaaaaaaaaaa", now, "NVIDIA H200", lines.append)
    assert set(table["backends"]) == {"triton"} and table["kernels_hash"] == now
    assert len(lines) == 1 and "tune that backend again" in lines[0] and lines[0].endswith("starting tilelang over")


@pytest.mark.parametrize("path", sorted((ROOT / "autotune").glob("*/*.json")),
                         ids=lambda p: p.parent.name + "/" + p.name)
def test_committed_tuned_files_serve_the_generated_kernels(path):
    """A committed file is read by its package as it is now: same spec hash (its name and inside),
    every backend's kernels hash current. A kernel change that voids a file must replace or remove it."""
    spec_name = path.stem.rsplit("-", 1)[0]
    spec_mod = importlib.import_module(f"generated.{spec_name}.spec")
    assert path.name == f"{spec_name}-{spec_mod.SPEC_HASH}.json"
    _, stale = cache.load(path, spec_name, spec_mod.SPEC_HASH, lookup.package_kernels_hashes(f"generated.{spec_name}"))
    assert stale == {}


def test_kernels_hash_follows_the_code_not_its_comments(tmp_path):
    (tmp_path / "a.py").write_text("def f(x):\n    return x + 1\n")
    (tmp_path / "notes.txt").write_text("ignored")
    h = cache.kernels_hash(tmp_path)
    (tmp_path / "notes.txt").write_text("still ignored")
    assert cache.kernels_hash(tmp_path) == h
    (tmp_path / "a.py").write_text("# why f adds one\n\ndef f(x):\n    # and says so\n\n    return x + 1   \r\n")
    assert cache.kernels_hash(tmp_path) == h
    for changed in ("def f(x):\n    return x + 2\n", "def f(x):\n    return '# x + 1'\n",
                    "def f(x):  # a comment at the end of a line counts\n    return x + 1\n",
                    'def f(x):\n    """a docstring counts"""\n    return x + 1\n'):
        (tmp_path / "a.py").write_text(changed)
        assert cache.kernels_hash(tmp_path) != h, changed
    (tmp_path / "a.py").write_text("def f(x):\n    return x + 1\n")
    (tmp_path / "b.py").write_text("")
    assert cache.kernels_hash(tmp_path) != h  # a new file counts, by its name
    assert KDA_KERNELS != lookup.package_kernels_hashes("generated.gla")
    assert set(KDA_KERNELS) == {"triton", "tilelang"} and KDA_KERNELS["triton"] != KDA_KERNELS["tilelang"]


def test_cpu_tensors_and_untuned_renders_never_read_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GKA_GEN_AUTOTUNE_DIR", str(tmp_path))
    lookup.invalidate()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = torch.empty(1, dtype=torch.bfloat16)
        assert lookup.launch_config("kda", "aaaaaaaaaaaa", "generated.kda", "k", DEFAULT, x=x, K=128, V=128,
                                    T=4096) == DEFAULT  # CPU: no GPU name, no file
        monkeypatch.setattr(lookup, "gpu_name", lambda x: "NVIDIA H200")
        assert lookup.launch_config("kda", "", "t", "k", DEFAULT, x=x, K=128, V=128, T=4096) == DEFAULT
    assert lookup._TABLES == {}


def test_overrides_win_and_are_undone(on_h200):
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"), _table())
    with lookup.overrides("kda", {"chunk_grad_bwd": {"BK": 128}}):
        assert _ask()["BK"] == 128
        with lookup.overrides("kda", {"chunk_state_bwd": {"BV": 16}}):
            assert _ask()["BK"] == 32 and _ask(kernel="chunk_state_bwd")["BV"] == 16
        assert _ask()["BK"] == 128
    assert _ask()["BK"] == 32


def test_autotune_env_runs_the_search_for_a_missing_bucket(on_h200, monkeypatch):
    """GKA_GEN_AUTOTUNE=1: a miss searches that bucket (here a stand-in that writes an entry)."""
    calls = []

    def fake_tune(package, shapes, **kw):
        calls.append((package, shapes))
        assert lookup._TUNING
        t = _table(buckets={shapes[0].bucket: {"kernels": {"chunk_grad_bwd": {"config": {"BK": 16}}}}})
        cache.save(cache.tuned_path(kw["out"], "NVIDIA H200", "kda", "aaaaaaaaaaaa"), t)

    monkeypatch.setattr(tune, "tune_package", fake_tune)
    with pytest.warns(RuntimeWarning, match="no tuned launch configs"):
        assert _ask() == DEFAULT  # not asked for: no search
    assert calls == []
    lookup.invalidate()
    monkeypatch.setenv("GKA_GEN_AUTOTUNE", "1")
    x = torch.empty(4, 3000, 16, 128, dtype=torch.bfloat16)
    got = lookup.launch_config("kda", "aaaaaaaaaaaa", "generated.kda", "chunk_grad_bwd", DEFAULT, x=x, K=128, V=128,
                               T=3000)
    assert got["BK"] == 16
    assert calls == [("generated.kda", [tune.Shape("bf16", 2, 4096, 16, 128, 128)])]
    assert not lookup._TUNING
    # a bucket with only the backend race in it (no Triton search yet) is searched too
    calls.clear()
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"),
               _race_table({"fwd": 1.0}, {"fwd": 2.0}))
    lookup.invalidate()
    x = torch.empty(4, 4096, 16, 128, dtype=torch.bfloat16)
    lookup.launch_config("kda", "aaaaaaaaaaaa", "generated.kda", "chunk_grad_bwd", DEFAULT, x=x, K=128, V=128, T=4096)
    assert len(calls) == 1


# ----------------------------------------------------------------------------- backend="auto"
def _race_table(tri: dict, tl: dict, bucket="bf16/K128/V128/T4096"):
    t = _table(buckets={bucket: {"kernels": {}, "phases": tri}})
    t["backends"]["tilelang"] = {bucket: {"kernels": {}, "phases": tl}}
    return t


def _faster(phases, T=4096, K=128, dtype=torch.bfloat16):
    return lookup.faster_backend("kda", "aaaaaaaaaaaa", "generated.kda", x=torch.empty(1, dtype=dtype), K=K, V=128,
                                 T=T, phases=phases)


def test_auto_reads_the_race_of_the_nearest_bucket(on_h200):
    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", "aaaaaaaaaaaa"),
               _race_table({"fwd": 1.0, "bwd": 2.0, "recurrent": 5.0}, {"fwd": 0.8, "bwd": 2.5}))
    assert _faster(("fwd",)) == "tilelang"  # 0.8 < 1.0
    assert _faster(("fwd", "bwd")) == "triton"  # 3.3 > 3.0: the whole call decides
    assert _faster(("fwd",), T=3000) == "tilelang"  # nearest T
    assert _faster(("recurrent",)) is None  # TileLang's recurrent phase was not timed: nothing says
    assert _faster(("fwd",), K=64) is None and _faster(("fwd",), dtype=torch.float32) is None


def test_race_phases_are_validated(tmp_path):
    p = tmp_path / "kda.json"
    for bad in ({"fwd": -1.0}, {"fwd": "1"}, {"decode": 1.0}, {"fwd": True}):
        cache.save(p, _race_table({"fwd": 1.0}, bad))
        with pytest.raises(cache.CacheError, match="phases"):
            cache.load(p, "kda", "aaaaaaaaaaaa", KDA_KERNELS)


def test_generated_ops_ask_the_race_for_their_call(on_h200, monkeypatch):
    """The ops layer's wiring: the race is asked for this call's shape bucket (tokens per sequence
    of a varlen batch) and phases, and TileLang's kernels for the call are required."""
    import generated.kda.ops as ops
    from gka_gen.testing import make_inputs

    cache.save(cache.tuned_path(on_h200, "NVIDIA H200", "kda", ops._spec.SPEC_HASH),
               _race_table({"fwd": 1.0, "bwd": 2.0}, {"fwd": 0.5, "bwd": 1.0}, bucket="fp32/K32/V32/T64")
               | {"spec_hash": ops._spec.SPEC_HASH, "kernels_hash": KDA_KERNELS})
    seen = []
    real = ops._rt.resolve_backend

    def spy(backend, device, op, **kw):
        seen.append((kw["kernels"], kw["race"]()))
        return real(backend, device, op, **kw)

    monkeypatch.setattr(ops._rt, "resolve_backend", spy)
    a = make_inputs(ops._spec.load_spec(), B=1, T=128, H=1, K=32, V=32, dtype=torch.float32,
                    cu_seqlens=[0, 60, 128], requires_grad=True)
    ops.chunk_kda(**a, backend="reference")
    with torch.no_grad():
        ops.chunk_kda(**a, backend="reference")
    assert seen == [(("chunk_fwd", "chunk_bwd"), "tilelang"), (("chunk_fwd",), "tilelang")]


def test_race_times_each_backend_and_leaves_a_wrong_phase_out(tmp_path, monkeypatch):
    """race_shape with stand-in calls: Triton's three phases are timed; TileLang's phases are those
    its KERNELS allow, each checked against Triton's outputs first (a wrong backward gets no time,
    so auto can never pick it); a resumed race re-times nothing."""
    timed = []

    class FakeCalls:
        def __init__(self, package, shape, device, backend="triton"):
            self.backend = backend

        def phase(self, name):
            wrong = self.backend == "tilelang" and name == "bwd"
            return lambda: (torch.full((4,), 2.0 if wrong else 1.0), name, self.backend)

    monkeypatch.setattr(tune, "Calls", FakeCalls)
    monkeypatch.setattr(tune, "max_rel_diff", lambda o, r: float((o[0] - r[0]).abs().max()) + (o[1] != r[1]))
    monkeypatch.setattr(tune, "bench", lambda fn, dev: timed.append(fn()[1:]) or {"triton": 2.0, "tilelang": 1.0}[
        fn()[2]])
    shape = tune.Shape("bf16", 4, 4096, 16, 128, 128)
    path = tmp_path / "kda.json"
    table = cache.new_table("kda", "aaaaaaaaaaaa", KDA_KERNELS, "NVIDIA H200", {}, "now")
    lines = []
    tune.race_shape("generated.kda", "kda", shape, table, path, "cpu", ("triton", "tilelang"), lines.append)
    saved = json.loads(path.read_text())["backends"]
    assert saved["triton"][shape.bucket]["phases"] == {"fwd": 2.0, "bwd": 2.0, "recurrent": 2.0}
    assert saved["tilelang"][shape.bucket]["phases"] == {"fwd": 1.0, "recurrent": 1.0}
    assert saved["tilelang"][shape.bucket]["rel_diff"] == {"fwd": 0.0, "bwd": 1.0, "recurrent": 0.0}
    assert any("bwd: differs from Triton" in x for x in lines)
    timed.clear()
    tune.race_shape("generated.kda", "kda", shape, table, path, "cpu", ("triton", "tilelang"), lines.append)
    assert timed == [("bwd", "tilelang")] or timed == []  # only the phase that is still missing may run again
    assert tune._tilelang_phases("generated.kda") == ("fwd", "bwd", "recurrent")


def test_tilelang_search_tunes_its_own_kernels_and_the_race_uses_them(tmp_path, monkeypatch):
    """The TileLang search with stand-in calls: each linear kernel's threads are tried under
    backend="tilelang" overrides (Triton's same-named kernels untouched), a config whose outputs
    differ is skipped, the fastest is kept in the file's "tilelang" bucket, and the race then runs
    TileLang with those configs; the ridge family has no TileLang space and is skipped."""
    seen = []

    def active(backend):
        return {k[2]: v for k, v in lookup._OVERRIDES.items() if k[:2] == ("deltanet", backend)}

    class FakeCalls:
        def __init__(self, package, shape, device, backend="triton"):
            self.backend = backend

        def phase(self, name):
            def fn():
                tl = active("tilelang")
                seen.append((self.backend, name, active("triton").get("chunk_grad_bwd"), tl.get("chunk_grad_bwd")))
                wrong = tl.get("chunk_output_fwd", {}).get("threads") == 256  # a config with a bug
                return torch.full((2,), 3.0 if wrong else 1.0), self.backend, json.dumps(tl, sort_keys=True)
            return fn

    def bench(fn, dev):  # more threads: faster, per kernel
        out = fn()
        return 10.0 - sum(c["threads"] for c in json.loads(out[2]).values()) / 1000

    monkeypatch.setattr(tune, "Calls", FakeCalls)
    monkeypatch.setattr(tune, "bench", bench)
    monkeypatch.setattr(tune, "max_rel_diff", lambda o, r: float((o[0] - r[0]).abs().max()))
    shape = tune.Shape("bf16", 2, 64, 2, 64, 64)
    from generated.deltanet.tilelang_kernels import common as tlc

    table = cache.new_table("deltanet", "aaaaaaaaaaaa", {"triton": "x"}, "NVIDIA H200", {}, "now")
    path = tmp_path / "deltanet.json"
    tune._tune_shape("generated.deltanet", "deltanet", "linear", tlc, shape, table, path, "cpu", math.inf, 1,
                     False, {}, False, lambda *_: None, "tilelang")
    bucket = json.loads(path.read_text())["backends"]["tilelang"][shape.bucket]["kernels"]
    assert set(bucket) == set(tlc.TUNABLE) and all(e["done"] for e in bucket.values())
    assert bucket["chunk_state_fwd"]["config"]["threads"] == 256  # the fastest of 64 / 128 / 256 (any stages)
    assert bucket["chunk_grad_bwd"]["default"] == {"threads": 128}
    out = bucket["chunk_output_fwd"]  # faster at 256 threads, but wrong there: never kept
    assert out["config"] == {"threads": 128} and [t["status"] for t in out["trials"]] == ["ok", "mismatch"]
    assert all(s[2] is None for s in seen)  # Triton's chunk_grad_bwd never got a TileLang config

    seen.clear()
    tune.race_shape("generated.deltanet", "deltanet", shape, table, path, "cpu", ("triton", "tilelang"),
                    lambda *_: None)
    assert {s[3]["threads"] for s in seen if s[0] == "tilelang"} == {bucket["chunk_grad_bwd"]["config"]["threads"]}
    assert tune._tilelang_tunable("generated.gka", "ridge", lambda *_: None) is None


def test_recheck_times_each_default_and_earlier_pick_and_leaves_the_search_open(tmp_path, monkeypatch):
    """After a kernel change voids a file, --recheck runs per bucket of the voided search each kernel's
    new default and its earlier pick only (on the default's parameters), verified and timed; keeps
    the faster; spends the picks; and leaves each search open, so a plain run goes on from there."""
    from generated.deltanet import spec as dn_spec
    from generated.deltanet import triton_kernels as tk

    shape = tune.Shape("bf16", 2, 64, 2, 64, 64)
    defaults = {k: tk.default_config(k, 64, 64) for k in configs.kernels("linear")}
    grad = {**defaults["chunk_grad_bwd"], "BV": 16}  # faster in the stand-in timing
    out = {**defaults["chunk_output_fwd"], "BK": 32}  # wrong outputs with the new kernels
    picks = {"chunk_grad_bwd": grad, "chunk_output_fwd": out, "chunk_state_fwd": defaults["chunk_state_fwd"],
             "fused_recurrent_fwd": {**defaults["fused_recurrent_fwd"], "gone": 1}}  # a parameter no longer taken
    path = cache.tuned_path(tmp_path, "cpu", "deltanet", dn_spec.SPEC_HASH)
    bucket = {"shape": tune.asdict(shape), "kernels": {k: {"config": c} for k, c in picks.items()}}
    cache.save(path, cache.new_table("deltanet", dn_spec.SPEC_HASH, {"triton": "0" * 12}, "cpu", {}, "then")
               | {"backends": {"triton": {shape.bucket: bucket}}})

    def active():
        return {k[2]: v for k, v in lookup._OVERRIDES.items() if k[:2] == ("deltanet", "triton")}

    class FakeCalls:
        def __init__(self, package, shape, device, backend="triton"):
            pass

        def phase(self, name):
            return lambda: (torch.full((2,), 3.0 if active().get("chunk_output_fwd") == out else 1.0),
                            json.dumps(active(), sort_keys=True))

    monkeypatch.setattr(tune, "Calls", FakeCalls)
    monkeypatch.setattr(tune, "bench", lambda fn, dev: 10.0 - (json.loads(fn()[1]).get("chunk_grad_bwd") == grad))
    monkeypatch.setattr(tune, "max_rel_diff", lambda o, r: float((o[0] - r[0]).abs().max()))
    lines = []
    tune.tune_package("generated.deltanet", [], device="cpu", out=tmp_path, use_prefilter=False, progress=False,
                      echo=lines.append, recheck=True)
    data, stale = cache.load(path, "deltanet", dn_spec.SPEC_HASH, lookup.package_kernels_hashes("generated.deltanet"))
    assert stale == {} and "prior" not in data  # current now, the picks spent
    entries = data["backends"]["triton"][shape.bucket]["kernels"]
    assert set(entries) == set(defaults) and not any(e["done"] for e in entries.values())
    assert all(e["rechecked"] for e in entries.values())
    tried = {k: [t["config"] for t in e["trials"]] for k, e in entries.items()}
    assert tried["chunk_grad_bwd"] == [defaults["chunk_grad_bwd"], grad] and entries["chunk_grad_bwd"]["config"] == grad
    assert [t["status"] for t in entries["chunk_output_fwd"]["trials"]] == ["ok", "mismatch"]
    assert entries["chunk_output_fwd"]["config"] == defaults["chunk_output_fwd"]
    assert tried["chunk_state_fwd"] == [defaults["chunk_state_fwd"]]  # the pick was the default
    assert tried["fused_recurrent_fwd"] == [defaults["fused_recurrent_fwd"]]  # "gone" dropped: the default again
    assert tried["chunk_intra_fwd"] == [defaults["chunk_intra_fwd"]]  # no earlier pick
    assert any("chunk_grad_bwd: " in x and "the earlier pick rechecked" in x for x in lines)
    assert set(data["backends"]["triton"][shape.bucket]["phases"]) == {"fwd", "bwd", "recurrent"}

    lines.clear()  # a second recheck has nothing to do
    tune.tune_package("generated.deltanet", [], device="cpu", out=tmp_path, use_prefilter=False, progress=False,
                      echo=lines.append, recheck=True)
    assert any("nothing to recheck" in x for x in lines)
    # a plain search goes on with the candidates not tried yet, and closes the kernel's search
    monkeypatch.setitem(configs.SPACES, "linear", {"chunk_grad_bwd": ("bwd", {"BV": (16, 32, 64)})})
    tune.tune_package("generated.deltanet", [shape], device="cpu", out=tmp_path, use_prefilter=False,
                      progress=False, echo=lines.append)
    e = json.loads(path.read_text())["backends"]["triton"][shape.bucket]["kernels"]["chunk_grad_bwd"]
    assert [t["config"]["BV"] for t in e["trials"]][:2] == [defaults["chunk_grad_bwd"]["BV"], 16]
    assert {t["config"]["BV"] for t in e["trials"]} == {16, 32, 64} and len(e["trials"]) == 3
    assert e["done"] and "rechecked" not in e


# ----------------------------------------------------------------------------- config spaces
@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet", "kda", "gla"])
def test_tilelang_spaces_match_the_generated_programs(name):
    common = importlib.import_module(f"generated.{name}.tilelang_kernels.common")
    assert tuple(configs.kernels("linear", "tilelang")) == common.TUNABLE
    for k in common.TUNABLE:
        default = common.default_config(k, 80, 80)
        assert set(configs.TILELANG_SPACES["linear"][k][1]) <= set(default), k
        assert configs.candidates("linear", k, 80, 80, default, "tilelang")[0] == default


@pytest.mark.parametrize("name", NAMES)
def test_spaces_match_the_generated_kernels(name):
    import importlib

    kern = importlib.import_module(f"generated.{name}.triton_kernels")
    family = importlib.import_module(f"generated.{name}.spec").CANONICAL["family"]
    assert tuple(configs.kernels(family)) == kern.TUNABLE
    for K in (32, 64, 128, 256):
        for k in kern.TUNABLE:
            default = kern.default_config(k, K, K)
            assert set(configs.SPACES[family][k][1]) <= set(default), k  # every searched param is a launch kwarg
            cands = configs.candidates(family, k, K, K, default)
            assert cands[0] == default
            assert all(set(c) == set(default) for c in cands)
            assert len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)
            for c in cands[1:]:
                assert all(c[p] <= max(16, K) for p in ("BK", "BV", "BR") if p in c), (k, c)


def test_candidates_drop_blocks_wider_than_their_axis():
    default = {"BK": 32, "BV": 32, "num_warps": 8, "num_stages": 1}
    cands = configs.candidates("linear", "chunk_grad_bwd", 32, 32, default)
    assert cands == [default] + [{**default, "BK": bk, "BV": bv, "num_warps": w}
                                 for bk in (16, 32) for bv in (16, 32) for w in (4, 8)
                                 if {**default, "BK": bk, "BV": bv, "num_warps": w} != default]


def test_parse_shapes_default_grid_keeps_tokens_constant():
    shapes = tune.parse_shapes(tune.DEFAULT_SHAPES)
    assert len(shapes) == 8
    assert {(s.K, s.V) for s in shapes} == {(64, 64), (128, 128)}
    assert all(s.B * s.T == 16384 and s.H == 16 and s.dtype == "bf16" for s in shapes)
    assert [s.B for s in shapes if s.K == 128] == [8, 4, 2, 1]
    two = tune.parse_shapes("K=64 V=32 T=100 B=3 dtype=fp32,bf16; K=16 T=8 tokens=8")
    assert two == [tune.Shape("fp32", 3, 100, 16, 64, 32), tune.Shape("bf16", 3, 100, 16, 64, 32),
                   tune.Shape("bf16", 1, 8, 16, 16, 16)]
    for bad in ("K=64", "T=64", "K=64 T=1 X=2", "K=64,128 V=64 T=8"):
        with pytest.raises(ValueError):
            tune.parse_shapes(bad)


# ----------------------------------------------------------------------------- the search loop
def _ref():
    return (torch.ones(3), torch.arange(4.))


def test_search_skips_failing_wrong_and_unfit_configs():
    cands = [{"c": 0}, {"c": 1}, {"c": 2}, {"c": 3}, {"c": 4}, {"c": 5}]
    ms = {0: 2.0, 2: 1.0, 5: 1.5}

    def run(cfg):
        c = cfg["c"]
        if c == 1:
            raise RuntimeError("OutOfResources: shared memory, Required: 300000")
        if c == 3:
            return (torch.ones(3), torch.arange(4.) * 1.5)  # a config that changes results
        if c == 4:
            return (torch.full((3,), math.nan), torch.arange(4.))
        return (torch.ones(3) + 1e-4, torch.arange(4.))

    verdicts = [prefilter.Verdict(False, "spills 500/500 B", 1, 255, 500)] + \
        [prefilter.Verdict(True)] * 4 + [prefilter.Verdict(False, "shared memory 300000 B > 232448")]
    seen = []
    trials = tune.search(cands, run, lambda cfg: ms[cfg["c"]], _ref(), 1e-3, math.inf, verdicts=verdicts,
                         on_trial=seen.append)
    assert [t["status"] for t in trials] == ["ok", "error", "ok", "mismatch", "mismatch", "resources"]
    assert trials[0]["ms"] == 2.0  # the default runs even when the resource model objects
    assert "OutOfResources" in trials[1]["detail"] and trials[1]["ms"] is None
    assert "shared memory" in trials[5]["detail"]
    assert seen == trials
    assert tune.best_of(trials)["config"] == {"c": 2}


def test_the_resource_model_drops_what_cannot_run_and_records_spills():
    """On the H200 the fastest ridge solves spill hundreds of bytes a thread (4 warps beat spill-free
    8 warps by 1.2-1.7x: bench/results/ridge_spills_vs_time.md), so a spill is recorded with the
    candidate and the candidate is timed; a compile error or too much shared memory drops it."""
    def usage(**kw):
        fields = {"shared": 114688, "regs": 255, "spill_stores": 0, "spill_loads": 0, **kw}
        return resources.Usage("generated.gka", "chunk_ridge_fwd_kernel", {}, **fields)

    spilled = prefilter.verdict([usage(spill_stores=572, spill_loads=540)])
    assert spilled.fits and spilled.spill == 572 and spilled.regs == 255
    too_big = prefilter.verdict([usage(), usage(shared=resources.H100_SHARED + 1)])
    assert not too_big.fits and "shared memory" in too_big.why
    broken = prefilter.verdict([usage(error="CompilationError: x")])
    assert not broken.fits and broken.why.startswith("CompilationError")


def test_a_resumed_search_times_what_an_older_version_dropped_for_spills():
    spilled = {"config": {"BS": 32}, "status": "resources", "detail": "spills 572/540 B a thread (> 64)"}
    too_big = {"config": {"BS": 64}, "status": "resources", "detail": "shared memory 300000 B > 232448"}
    timed = {"config": {"BS": 16}, "status": "ok", "ms": 1.0}
    entries = {"chunk_ridge_fwd": {"done": True, "trials": [timed, spilled, too_big]},
               "chunk_state_fwd": {"done": True, "trials": [timed]}}
    tune._forget_spill_drops(entries)
    assert entries["chunk_ridge_fwd"] == {"trials": [timed, too_big]}  # reopened: BS=32 runs next time
    assert entries["chunk_state_fwd"]["done"]


def test_search_resumes_and_stops_at_the_budget():
    cands = [{"c": i} for i in range(4)]
    ran = []

    def run(cfg):
        ran.append(cfg["c"])
        return _ref()

    trials = []
    with pytest.raises(tune.BudgetExceeded):
        tune.search(cands, run, lambda cfg: 1.0, _ref(), 1e-3, time.monotonic() - 1, on_trial=trials.append)
    assert trials == [] and ran == []
    trials = tune.search(cands, run, lambda cfg: 1.0, _ref(), 1e-3, math.inf, tried=[{"c": 0}, {"c": 2}])
    assert ran == [1, 3] and [t["config"] for t in trials] == [{"c": 1}, {"c": 3}]


def test_a_gpu_fault_stays_on_record_and_stops_the_process():
    """A config that faults on the GPU kills the CUDA context: it is on record as 'crash' before it
    runs (so a resumed search skips it) and the search stops with ContextLost; out of memory and
    compile errors are ordinary 'error' trials."""
    class AcceleratorError(RuntimeError):  # torch's sticky CUDA fault, by name
        pass

    def run(cfg):
        if cfg["c"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if cfg["c"] == 2:
            raise AcceleratorError("CUDA error: an illegal memory access was encountered")
        return _ref()

    record = []

    def on_start(t):
        record.append(t)

    def on_trial(t):
        assert record[-1]["config"] == t["config"] and record[-1]["status"] == "crash"
        record[-1] = t

    cands = [{"c": i} for i in range(4)]
    with pytest.raises(tune.ContextLost, match="illegal memory access"):
        tune.search(cands, run, lambda cfg: 1.0, _ref(), 1e-3, math.inf, on_trial=on_trial, on_start=on_start)
    assert [t["status"] for t in record] == ["ok", "error", "crash"]
    assert not tune.context_lost(RuntimeError("CUDA out of memory")) and tune.context_lost(RuntimeError(
        "CUDA error: unspecified launch failure"))
    # resumed: the crashed config counts as tried
    trials = tune.search(cands, run, lambda cfg: 1.0, _ref(), 1e-3, math.inf, tried=[t["config"] for t in record])
    assert [t["config"] for t in trials] == [{"c": 3}]


def test_command_goes_on_in_a_new_process_after_a_gpu_fault(monkeypatch):
    """After a fault the command hands the specs left to a fresh process (fresh CUDA context) with
    the budget left, and gives up after MAX_RESTARTS faults in a row."""
    import subprocess

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    tuned = []

    def fake_tune(package, shapes, **kw):
        tuned.append(package)
        if package == "generated.kda":
            raise tune.ContextLost("config {'BK': 16}: CUDA error: an illegal memory access was encountered")
        return Path("x.json")

    calls = []

    def fake_call(cmd, env):
        calls.append((cmd, env["GKA_GEN_AUTOTUNE_RESTARTS"]))
        return 3

    monkeypatch.setattr(tune, "tune_package", fake_tune)
    monkeypatch.setattr(subprocess, "call", fake_call)
    monkeypatch.delenv("GKA_GEN_AUTOTUNE_RESTARTS", raising=False)
    shapes = tune.parse_shapes("K=128 T=2048,8192 tokens=16384 H=16 dtype=bf16")
    lines = []
    assert tune.run(["specs/deltanet.yaml", "specs/kda.yaml", "specs/gla.yaml"], shapes, budget_min=5,
                    out=Path("o"), echo=lines.append) is False  # the new process ran out of budget (exit 3)
    assert tuned == ["generated.deltanet", "generated.kda"]
    (cmd, restarts), = calls
    assert cmd[1:6] == ["-m", "gka_gen.cli", "autotune", "specs/kda.yaml", "specs/gla.yaml"] and restarts == "1"
    assert tune.parse_shapes(cmd[cmd.index("--shapes") + 1]) == shapes
    assert cmd[cmd.index("--out") + 1] == "o" and 4.9 < float(cmd[cmd.index("--budget-min") + 1]) <= 5
    assert any("going on in a new process" in line for line in lines)
    calls.clear()  # a recheck goes on as a recheck
    tune.run(["specs/kda.yaml"], [], recheck=True, echo=lines.append)
    assert "--recheck" in calls[0][0] and "--shapes" not in calls[0][0]
    monkeypatch.setenv("GKA_GEN_AUTOTUNE_RESTARTS", str(tune.MAX_RESTARTS))
    with pytest.raises(tune.TuneError, match="faulted"):
        tune.run(["specs/kda.yaml"], shapes, echo=lines.append)


def test_max_rel_diff():
    a = (torch.tensor([1., 2.]), None, (torch.tensor([4.]),))
    assert tune.max_rel_diff(a, a) == 0
    assert tune.max_rel_diff((torch.tensor([1., 2.2]),), (torch.tensor([1., 2.]),)) == pytest.approx(0.1)
    assert tune.max_rel_diff((torch.ones(2),), (torch.ones(3),)) == math.inf
    assert tune.max_rel_diff((torch.ones(2),), (torch.ones(2), torch.ones(2))) == math.inf


# ----------------------------------------------------------------------------- end to end (interpreter)
@pytest.mark.timeout(180)
def test_tuner_end_to_end_in_the_interpreter(tmp_path, monkeypatch):
    """The real search on CPU: deltanet at a tiny shape, two candidates of one kernel, through the
    resource model (sm_90 AOT compiles), verification against the default, timing, the file, the
    resume, and the lookup reading the result. ~25 s on 2 cores (bf16: at fp32 the IEEE dots of
    chunk_grad_bwd spill kilobytes, and their sm_90 compiles take a minute)."""
    monkeypatch.setitem(configs.SPACES, "linear", {"chunk_grad_bwd": ("bwd", {"BV": (16, 32)}),
                                                   "fused_recurrent_fwd": ("recurrent", {"BV": (16, 32)})})
    shape = tune.Shape("bf16", 1, 32, 1, 32, 32)
    lines = []
    path = tune.tune_package("generated.deltanet", [shape], device="cpu", out=tmp_path, jobs=2, progress=False,
                             echo=lines.append)
    from generated.deltanet import spec as dn_spec

    assert path == tmp_path / "cpu" / f"deltanet-{dn_spec.SPEC_HASH}.json"
    data, stale = cache.load(path, "deltanet", dn_spec.SPEC_HASH, lookup.package_kernels_hashes("generated.deltanet"))
    assert stale == {}
    assert data["gpu"] == "cpu" and set(data["versions"]) >= {"torch", "triton", "gka_gen"}
    bucket = data["backends"]["triton"]["bf16/K32/V32/T32"]
    assert bucket["shape"] == {"dtype": "bf16", "B": 1, "T": 32, "H": 1, "K": 32, "V": 32}
    entry = bucket["kernels"]["fused_recurrent_fwd"]
    assert entry["done"] and entry["phase"] == "recurrent"
    assert entry["default"] == {"BV": 32, "num_warps": 1}  # 2048 // K, capped by V
    assert [t["config"]["BV"] for t in entry["trials"]] == [32, 16]
    assert all(t["status"] == "ok" and t["ms"] > 0 and t["rel_diff"] <= tune.TOLERANCE["bf16"]
               and t["resources"]["spill"] == 0 for t in entry["trials"])
    assert entry["config"] == min(entry["trials"], key=lambda t: t["ms"])["config"]
    assert entry["default_ms"] == entry["trials"][0]["ms"]
    bwd = bucket["kernels"]["chunk_grad_bwd"]  # timed inside the backward, verified on every gradient
    assert bwd["done"] and [t["config"]["BV"] for t in bwd["trials"]] == [32, 16]
    assert all(t["status"] == "ok" for t in bwd["trials"])
    # the log says what each kernel got: config and default -> tuned time of its call
    gains = [x for x in lines if "fused_recurrent_fwd:" in x]
    assert len(gains) == 1 and f"BV={entry['config']['BV']}" in gains[0] and f"{entry['default_ms']:.3f} ->" in gains[0]

    # cut short after one candidate: the resumed search checks and runs only the other one
    data["backends"]["triton"]["bf16/K32/V32/T32"]["kernels"]["fused_recurrent_fwd"]["trials"].pop()
    data["backends"]["triton"]["bf16/K32/V32/T32"]["kernels"]["fused_recurrent_fwd"]["done"] = False
    cache.save(path, data)
    checked = []
    real_check = prefilter.check
    monkeypatch.setattr(prefilter, "check", lambda *a: checked.append(a[5]) or real_check(*a))
    tune.tune_package("generated.deltanet", [shape], device="cpu", out=tmp_path, jobs=2, progress=False,
                      echo=lines.append)
    assert checked == [{"fused_recurrent_fwd": [{"BV": 16, "num_warps": 1}]}]
    again = json.loads(path.read_text())["backends"]["triton"]["bf16/K32/V32/T32"]["kernels"]
    assert again["fused_recurrent_fwd"]["done"] and again["fused_recurrent_fwd"]["trials"][0] == entry["trials"][0]
    assert [t["config"]["BV"] for t in again["fused_recurrent_fwd"]["trials"]] == [32, 16]
    assert again["chunk_grad_bwd"] == bwd  # a finished kernel is not touched

    # resumed again: nothing left to do, nothing re-timed
    before = path.read_text()
    tune.tune_package("generated.deltanet", [shape], device="cpu", out=tmp_path, jobs=2, progress=False,
                      echo=lines.append)
    assert json.loads(path.read_text())["backends"] == json.loads(before)["backends"]
    assert any("done already" in x for x in lines)

    # and the package picks the result up (as it would on a GPU of that name)
    monkeypatch.setenv("GKA_GEN_AUTOTUNE_DIR", str(tmp_path))
    monkeypatch.setattr(lookup, "gpu_name", lambda x: "cpu")
    lookup.invalidate()
    from generated.deltanet.triton_kernels import common

    q = torch.empty(1, 32, 1, 32, dtype=torch.bfloat16)
    assert common.launch_config("fused_recurrent_fwd", q, 32, 32, 32) == again["fused_recurrent_fwd"]["config"]
    assert common.launch_config("chunk_grad_bwd", q, 32, 32, 32) == bwd["config"]
    assert common.launch_config("chunk_state_bwd", q, 32, 32, 32) == common.default_config("chunk_state_bwd", 32, 32)
    lookup.invalidate()


# ----------------------------------------------------------------------------- the command
def test_command_tunes_each_spec_and_reports_the_budget(monkeypatch):
    """`gka-gen autotune` glue, as on a GPU: each spec's generated package in turn with the shapes
    and one deadline; a used-up budget stops it (exit 3, resumable); --backend picks search and race."""
    from typer.testing import CliRunner

    from gka_gen.cli import app

    calls = []

    def fake_tune(package, shapes, **kw):
        calls.append((package, shapes, kw["deadline"], {k: kw[k] for k in ("search", "race")}, kw["recheck"]))
        if package == "generated.gka":
            raise tune.BudgetExceeded
        return Path("x.json")

    monkeypatch.setattr(tune, "tune_package", fake_tune)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    r = CliRunner().invoke(app, ["autotune", "specs/deltanet.yaml", "specs/gka.yaml", "specs/kda.yaml",
                                 "--shapes", "K=128 T=4096", "--budget-min", "2"])
    assert r.exit_code == 3, r.output
    assert [c[0] for c in calls] == ["generated.deltanet", "generated.gka"]  # stopped at the budget
    assert calls[0][1] == [tune.Shape("bf16", 4, 4096, 16, 128, 128)]
    assert calls[0][2] == calls[1][2] and calls[0][2] - time.monotonic() < 120  # one deadline for the run
    assert "run the same command again to resume" in r.output

    assert calls[0][3] == {"search": ("triton",), "race": ("triton",)}

    calls.clear()
    r = CliRunner().invoke(app, ["autotune", "specs/kda.yaml", "--backend", "tilelang"])
    assert r.exit_code == 0 and calls[0][3] == {"search": ("tilelang",), "race": ("triton", "tilelang")}
    calls.clear()
    r = CliRunner().invoke(app, ["autotune", "specs/kda.yaml", "--backend", "all"])
    assert r.exit_code == 0 and calls[0][3] == {"search": ("triton", "tilelang"), "race": ("triton", "tilelang")}
    calls.clear()
    r = CliRunner().invoke(app, ["autotune", "specs/kda.yaml", "--shapes", "K=128"])
    assert r.exit_code == 2 and calls == []
    r = CliRunner().invoke(app, ["autotune", "specs/kda.yaml", "--recheck"])
    assert r.exit_code == 0 and calls[0][1] == [] and calls[0][4] is True
    calls.clear()
    r = CliRunner().invoke(app, ["autotune", "specs/kda.yaml", "--recheck", "--shapes", "K=128 T=4096"])
    assert r.exit_code == 2 and "--recheck takes its shapes from the tuned files" in r.output and calls == []
    # The --warm-workers pre-compile runs before the budget starts: a warm-up longer than the
    # budget (here "longer": the clock jumps 10 min) still leaves the search all of it.
    clock = [time.monotonic()]
    monkeypatch.setattr(tune.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(tune, "warm_caches", lambda *a: clock.__setitem__(0, clock[0] + 600))
    r = CliRunner().invoke(app, ["autotune", "specs/kda.yaml", "--budget-min", "2", "--warm-workers", "2"])
    assert r.exit_code == 0 and calls[0][2] == clock[0] + 120
    calls.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = CliRunner().invoke(app, ["autotune", "specs/kda.yaml"])
    assert r.exit_code == 2 and "needs a CUDA GPU" in r.output and calls == []


def test_warm_up_runs_one_race_per_spec_in_parallel_processes(monkeypatch):
    """--warm-workers: every spec's race once in a subprocess with exactly the run's shapes (so the
    timed run hits the compile caches); a failing worker is reported, not fatal."""
    import subprocess
    from types import SimpleNamespace

    shapes = tune.parse_shapes("K=128 T=2048,8192 tokens=16384 H=16 dtype=bf16; K=64 V=32 T=64 B=3 dtype=fp32")
    assert tune.parse_shapes(tune.shape_text(shapes)) == shapes
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        bad = cmd[4].endswith("gka.yaml")
        return SimpleNamespace(returncode=1 if bad else 0, stdout="", stderr="boom" if bad else "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    lines = []
    tune.warm_caches(["specs/kda.yaml", "specs/gka.yaml"], shapes, 2, lines.append)
    assert sorted(c[4] for c in seen) == ["specs/gka.yaml", "specs/kda.yaml"]
    for cmd in seen:
        assert cmd[1:4] == ["-m", "gka_gen.cli", "autotune"] and cmd[5:7] == ["--backend", "tilelang"]
        assert tune.parse_shapes(cmd[cmd.index("--shapes") + 1]) == shapes
    assert "  warmed kda" in lines and "  warmed gka (exit 1: boom)" in lines
