"""python -m bench COMMAND [options]: the GPU benchmarks and checks, one entry point.

    speed        fwd and fwd+bwd time vs flash-linear-attention and SDPA (bench/speed)
    correctness  generated kernels in bf16 vs the fp32 reference (bench/gpu_correctness.py)
    stress       GKA residual vs iterations, NaN/inf sweep (bench/gpu_stress.py)
    tilelang     TileLang kernels vs the fp32 reference and Triton (bench/tilelang_check.py)
    profile      per-kernel time of one fwd+bwd, ours beside fla's (bench/profile.py)
    tuned        the tuned launch configs and backend race of one GPU, as markdown (bench/tuned.py)

Each command takes --help. The older `python -m bench.gpu_correctness` form still works.
"""
import importlib
import sys

COMMANDS = {"speed": "bench.speed.run", "correctness": "bench.gpu_correctness", "stress": "bench.gpu_stress",
            "tilelang": "bench.tilelang_check", "profile": "bench.profile",
            "tuned": "bench.tuned"}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
