"""The `gka-gen` command line."""
from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compile YAML specs of linear-attention recurrences into verified Triton/TileLang kernels.",
)

SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"
SpecArg = Annotated[Path, typer.Argument(help="a spec file (YAML), e.g. specs/gka.yaml")]


def _clean_errors(fn):
    """A bad spec is one line on stderr and exit status 2: never a traceback."""

    @wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpecError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return run


def _load(path: Path):
    from .spec import load_spec
    from .symbolic.canonical import canonicalize

    spec = load_spec(path)
    return spec, canonicalize(spec)


@app.command()
@_clean_errors
def validate(specs: Annotated[list[Path], typer.Argument(help="spec files")]):
    """Check specs: fields, identifiers, expressions, shapes, and the canonical form."""
    for p in specs:
        spec, cf = _load(p)
        typer.echo(f"ok  {p}  ({cf.name}: {cf.family} family, hash {spec.hash})")


@app.command()
@_clean_errors
def show(spec: SpecArg):
    """Print the canonical form of a spec in readable math."""
    from .signature import op_signature
    from .symbolic.canonical import describe

    s, cf = _load(spec)
    typer.echo(describe(cf))
    args = ", ".join(a.name if a.required else f"{a.name}={a.default!r}" for a in op_signature(s))
    typer.echo(f"\n  chunk_{cf.name}({args})")


@app.command("list")
@_clean_errors
def list_specs(directory: Annotated[Path, typer.Option(help="where to look")] = SPECS_DIR):
    """List the known specs."""
    from .spec import load_spec

    for p in sorted(directory.glob("*.yaml")):
        s = load_spec(p)
        typer.echo(f"{s.name:16s} {s.file.title:28s} {p}")


@app.command()
@_clean_errors
def ir(
    spec: SpecArg,
    dot: Annotated[Optional[Path], typer.Option(help="write the graph as graphviz dot")] = None,
    mermaid: Annotated[Optional[Path], typer.Option(help="write the graph as a mermaid flowchart")] = None,
    png: Annotated[Optional[Path], typer.Option(help="draw the graph to a PNG (matplotlib)")] = None,
):
    """Print the forward and backward IR graphs of a spec, and optionally draw them."""
    from . import ir as irmod

    s, cf = _load(spec)
    program = irmod.lower(s, cf)
    typer.echo(irmod.format_program(program))
    if dot:
        dot.write_text(irmod.to_dot(program))
        typer.echo(f"wrote {dot}")
    if mermaid:
        mermaid.write_text(irmod.to_mermaid(program))
        typer.echo(f"wrote {mermaid}")
    if png:
        irmod.draw_png(program, png)
        typer.echo(f"wrote {png}")


@app.command()
@_clean_errors
def generate(
    specs: Annotated[Optional[list[Path]], typer.Argument(help="spec files (default: every spec in specs/)")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder")] = Path("generated"),
    check: Annotated[bool, typer.Option(help="only compare with what is on disk; exit 1 on a difference")] = False,
):
    """Generate the kernel packages generated/<name>/ (deterministic)."""
    from .codegen.generate import generate_packages

    paths = specs or sorted(SPECS_DIR.glob("*.yaml"))
    diffs = generate_packages(paths, out, check=check)
    if check:
        if diffs:
            for d in diffs:
                typer.echo(f"differs: {d}", err=True)
            typer.echo("generated/ is stale: run `gka-gen generate`", err=True)
            raise typer.Exit(1)
        typer.echo(f"generated/ matches the specs ({len(paths)} packages)")


@app.command()
@_clean_errors
def verify(
    specs: Annotated[Optional[list[Path]], typer.Argument(help="spec files (default: every spec in specs/)")] = None,
    backend: Annotated[str, typer.Option(help="triton | tilelang | reference")] = "triton",
):
    """Run each generated package against its spec-derived reference (fp64): outputs, states, gradients."""
    from .verify import verify_all

    if not verify_all(specs or sorted(SPECS_DIR.glob("*.yaml")), backend=backend, echo=typer.echo):
        raise typer.Exit(1)


@app.command()
@_clean_errors
def compare(
    specs: Annotated[list[Path], typer.Argument(help="spec files of the variants to compare")],
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    quick: Annotated[bool, typer.Option(help="small sizes: under 10 minutes on a 2-core CPU")] = False,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("compare_report"),
):
    """Compare variants on speed, numerics (incl. the ridge solve) and MQAR recall: OUT/report.md + PNGs."""
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device must be cpu or cuda, got {device!r}")
    from .compare import compare as run_compare

    command = " ".join(["gka-gen compare", *map(str, specs), f"--device {device}", *(["--quick"] if quick else []),
                        f"--out {out}"])
    run_compare(specs, device=device, quick=quick, out=out, command=command, echo=typer.echo)


@app.command()
@_clean_errors
def autotune(
    specs: Annotated[Optional[list[Path]], typer.Argument(help="spec files (default: every spec in specs/)")] = None,
    backend: Annotated[str, typer.Option(help="triton: search Triton configs | tilelang: search TileLang's "
                                              "(threads), then time TileLang beside Triton (what "
                                              "backend='auto' picks by) | all: both")] = "triton",
    shapes: Annotated[str, typer.Option(help="shape grid(s): 'K=64,128 T=2048,4096 tokens=16384 H=16 dtype=bf16' "
                                             "(V defaults to K, B to tokens/T; ';' separates grids)")] = "",
    budget_min: Annotated[Optional[float], typer.Option(help="stop after this many minutes of search and race, "
                                                            "counted after --warm-workers (resumable)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="folder of the tuned files (default: autotune/)")] = None,
    jobs: Annotated[Optional[int], typer.Option(help="parallel ahead-of-time compiles (default: all cores)")] = None,
    warm_workers: Annotated[int, typer.Option(help="compile the race's kernels in this many processes first "
                                                   "(one spec each), so the timed run loads them from cache")] = 0,
    recheck: Annotated[bool, typer.Option(help="after a kernel change voided a tuned file: per bucket of its "
                                               "earlier search, time each kernel's new default and earlier "
                                               "pick only, keep the faster (shapes come from the file)")] = False,
):
    """On a GPU: search each kernel's launch config per shape and time each backend's calls (the
    race backend='auto' reads); write autotune/<GPU>/<spec>-<hash>.json."""
    if backend not in ("triton", "tilelang", "all"):
        raise typer.BadParameter(f"--backend must be triton, tilelang or all, got {backend!r}")
    from .autotune.tune import DEFAULT_SHAPES, TuneError, parse_shapes, run

    if recheck and (shapes or warm_workers):
        raise typer.BadParameter("--recheck takes its shapes from the tuned files: leave out --shapes and "
                                 "--warm-workers")

    try:
        grid = [] if recheck else parse_shapes(shapes or DEFAULT_SHAPES)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    try:
        finished = run(specs or sorted(SPECS_DIR.glob("*.yaml")), grid, backend=backend, budget_min=budget_min,
                       out=out, jobs=jobs, warm_workers=warm_workers, recheck=recheck, echo=typer.echo)
    except TuneError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if not finished:  # budget used up: what was measured is saved, the same command resumes
        raise typer.Exit(3)


@app.command()
@_clean_errors
def demo():
    """The main job: regenerate generated/, verify every kernel against its spec, compare the variants."""
    from .codegen.generate import generate_packages

    paths = sorted(SPECS_DIR.glob("*.yaml"))
    out = SPECS_DIR.parent / "generated"
    stale = generate_packages(paths, out, check=True)
    generate_packages(paths, out)
    typer.echo(f"generated {len(paths)} packages in {out} ({'updated ' + str(len(stale)) + ' files' if stale else 'unchanged'})")
    from .solver_study import print_table, residuals
    from .verify import verify_all

    ok = verify_all(paths, backend="triton", echo=typer.echo)
    print_table(residuals())
    if not ok:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
