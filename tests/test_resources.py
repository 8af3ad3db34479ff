"""Every Triton kernel of every generated package fits an H100 at K = V = 128 (bf16 inputs).

No GPU: gka_gen.resources records the kernel launches of one call of each package under the
Triton interpreter (not executed), then compiles each launch ahead of time for sm_90 through the
kernel's own JIT binder and reads Triton's shared-memory requirement and ptxas's registers and
spills. ~1-2 minutes on 2 cores (Triton's cache makes reruns faster).

Fits: shared memory <= 232448 B (the H100's per-block opt-in maximum, what a launch is checked
against) and, for the default configs, at most resources.MAX_SPILL (64) bytes of spill stores /
loads per thread (why 64: see gka_gen/resources.py). `gka-gen autotune` drops candidates by the
shared-memory rule only: it times spilling ones, and the GPU decides.
"""
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gka_gen import resources  # noqa: E402

NAMES = ["deltanet", "gated_deltanet", "kda", "gla", "gka", "mesanet"]
MAX_SPILL = resources.MAX_SPILL


@pytest.fixture(scope="module")
def usages():
    return resources.resources([f"generated.{n}" for n in NAMES], K=128, V=128, dtype="bf16")


def test_tool_sees_every_package(usages):
    pkgs = {u.package for u in usages}
    assert pkgs == {f"generated.{n}" for n in NAMES}
    for n in NAMES:  # a forward, a backward and a recurrent kernel at least
        assert sum(u.package == f"generated.{n}" for u in usages) >= 3, n
    for u in usages:
        assert u.error is None, (u.package, u.kernel, u.error)
        assert u.shared is not None and u.regs is not None and u.spill_stores is not None


@pytest.mark.parametrize("name", NAMES)
def test_shared_memory_fits_the_h100(usages, name):
    """What a launch checks: without this the kernel does not run at all (OutOfResources)."""
    mine = [u for u in usages if u.package == f"generated.{name}"]
    bad = [u for u in mine if u.error is not None or u.shared > resources.H100_SHARED]
    assert not bad, "\n" + resources.table(bad, max_spill=MAX_SPILL)


# Defaults taken from the H200's measurements rather than from this model: they spill, and were
# faster for it (bench/results/ridge_spills_vs_time.md).
MEASURED_SPILLING = {("generated.gka", "chunk_ridge_fwd_kernel"), ("generated.gka", "chunk_ridge_bwd_solve_kernel")}


@pytest.mark.parametrize("name", NAMES)
def test_no_register_spills(usages, name):
    """Runs, but a spilling kernel round-trips its tiles through local memory in its hot loop."""
    mine = [u for u in usages if u.package == f"generated.{name}" and (u.package, u.kernel) not in MEASURED_SPILLING]
    bad = resources.check(mine, max_spill=MAX_SPILL)
    assert not bad, "\n" + resources.table(bad, max_spill=MAX_SPILL)


SYNTHETIC = '''
import triton
import triton.language as tl


@triton.jit
def big_dot_kernel(x, y, N: tl.constexpr):
    r = tl.arange(0, N)
    a = tl.load(x + r[:, None] * N + r[None, :])
    tl.store(y + r[:, None] * N + r[None, :], tl.dot(a, a, input_precision="tf32"))
'''


def test_tool_catches_a_kernel_that_cannot_fit(tmp_path, monkeypatch):
    """A [256, 256] fp32 tl.dot stages both operands in shared memory: 512 KB > 227 KB."""
    (tmp_path / "synthetic_big_dot.py").write_text(SYNTHETIC)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    launch = resources.Launch("synthetic_big_dot", "big_dot_kernel", [{"tensor": "float32"}, {"tensor": "float32"}],
                              {"N": {"int": 256}, "num_warps": {"int": 4}})
    small = resources.Launch("synthetic_big_dot", "big_dot_kernel", [{"tensor": "float32"}, {"tensor": "float32"}],
                             {"N": {"int": 32}, "num_warps": {"int": 4}})
    big_u, small_u = resources.compile_all({"synthetic": [launch, small]}, jobs=1)
    assert big_u.error is None and big_u.shared > resources.H100_SHARED
    assert resources.check([big_u]) == [big_u]
    assert small_u.error is None and small_u.shared <= resources.H100_SHARED
    assert "NO" in resources.table([big_u])


def test_a_search_sized_batch_reaches_the_compile_process():
    """A tuning search hands compile_all a few hundred launches at once (mesanet at K = 128: about
    1 MB of JSON), more than Linux lets one argv string hold (128 KiB). Launches of a module that
    does not exist come back as per-launch errors without compiling anything, so the test is quick."""
    pad = {f"P{i}": {"int": i} for i in range(60)}
    launches = [resources.Launch("no_such_module_for_the_test", "k", [{"tensor": "float32"}], {**pad, "N": {"int": n}})
                for n in range(600)]
    assert len(json.dumps([asdict(x) for x in launches])) > 128 * 1024
    usages = resources.compile_all({"synthetic": launches}, jobs=1)
    assert len(usages) == 600
    assert all(u.error and u.error.startswith("ModuleNotFoundError") for u in usages)
