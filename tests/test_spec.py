"""Spec parsing: the six specs load; malformed and hostile specs fail with one clear line."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gka_gen.cli import app
from gka_gen.errors import SpecError
from gka_gen.spec import load_spec, spec_from_dict
from gka_gen.spec import expr as E

SPECS = sorted((Path(__file__).resolve().parents[1] / "specs").glob("*.yaml"))
GDN = yaml.safe_load((SPECS[0].parent / "gated_deltanet.yaml").read_text())
GKA = yaml.safe_load((SPECS[0].parent / "gka.yaml").read_text())


def test_six_specs_exist_and_load():
    names = {load_spec(p).name for p in SPECS}
    assert {"deltanet", "gated_deltanet", "kda", "gka", "gla", "mesanet"} <= names


def _mutate(base, path, value):
    d = copy.deepcopy(base)
    *parents, last = path
    node = d
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return d


class _Delete:
    def __repr__(self):  # stable test ids: pytest-xdist workers must agree on them
        return "<deleted>"


_DELETE = _Delete()

# (base spec, path to change, new value, field the error must name, words the reason must contain)
BAD = [
    (GDN, ("colour",), "red", "colour", "unknown field"),
    (GDN, ("states",), _DELETE, "states", "required"),
    (GDN, ("chunk_size",), "64", "chunk_size", "Input should be"),
    (GDN, ("chunk_size",), 48, "chunk_size", "Input should be"),
    (GDN, ("name",), "Gated-DeltaNet", "name", "must match"),
    (GDN, ("name",), "import", "name", "reserved"),
    (GDN, ("layer", "class"), "not a class", "layer.class", "must match"),
    (GDN, ("update", "S"), "(I - beta*k*k.T) @ (exp(g)*S) + beta*k*v", "update.S", "dimension mismatch"),
    (GDN, ("update", "S"), "(I - beta*k*k.T) @ (exp(g)*S) + beta*k*w.T", "update.S", "unknown symbol 'w'"),
    (GDN, ("update", "S"), "S + k*v", "update.S", "outer product needs a transpose"),
    (GDN, ("update", "S"), "S @ S + k*v.T", "update.S", "dimension mismatch"),
    (GDN, ("update", "S"), "__import__('os').system('rm -rf /')", "update.S", "not allowed"),
    (GDN, ("update", "S"), "S.__class__", "update.S", "attribute"),
    (GDN, ("update", "S"), "[S for S in S]", "update.S", "not allowed"),
    (GDN, ("update", "S"), "lambda: S", "update.S", "not allowed"),
    (GDN, ("update", "S"), "S + 'k'", "update.S", "not allowed"),
    (GDN, ("update", "S"), "S if g else S", "update.S", "not allowed"),
    (GDN, ("update", "S"), "S +* k", "update.S", "cannot parse"),
    (GDN, ("update", "S"), "S" + " + k*v.T" * 60, "update.S", "longer than"),
    (GDN, ("update", "S"), "S*1e400 + k*v.T", "update.S", "magnitude"),
    (GDN, ("update", "S"), "exp(g)*S + k*v.T + fro(S)*S", "update.S", "belong in the readout"),
    (GDN, ("update", "S"), 3, "update.S", "Input should be a valid string"),
    (GDN, ("update", "S"), "S @ (I - beta*k*k.T) + beta*k*v.T", "update.S", "dimension mismatch"),
    (GDN, ("update", "S"), "exp(g)*S*S + beta*k*v.T", "update.S", "not linear in S"),
    (GDN, ("update", "S"), "exp(g)*S + beta*k*v.T + g*k*v.T", "update.S", "input"),
    (GDN, ("update", "S"), "exp(beta)*S + beta*k*v.T", "update.S", "decay"),
    (GDN, ("update", "S"), "g*S + beta*k*v.T", "update.S", "decay"),
    (GDN, ("update", "S"), "(I - beta*q*k.T) @ (exp(g)*S) + beta*k*v.T", "update.S", "neither a decay nor a delta-rule"),
    (GDN, ("update", "S"), "exp(g)*S", "update.S", "no input term"),
    (GDN, ("update", "X"), "S", "update", "not declared"),
    (GDN, ("readout", "o"), "S @ q * scale", "readout.o", "dimension mismatch"),
    (GDN, ("readout", "o"), "S.T @ v * scale", "readout.o", "dimension mismatch"),
    (GDN, ("readout", "o"), "S.T @ (q*q) * scale", "readout.o", "not a scaled input vector"),
    (GDN, ("readout",), {"y": "S.T @ q"}, "readout", "last readout statement must define 'o'"),
    (GDN, ("inputs", "q", "shape"), ["D"], "inputs.q.shape", "unknown dimension 'D'"),
    (GDN, ("dims", "T"), {}, "dims.T", "reserved"),
    (GDN, ("gates", "k"), {"space": "unit", "param": "sigmoid"}, "gates.k", "already declared"),
    (GDN, ("gates", "g", "default"), "beta", "gates.g.default", "different space"),
    (GDN, ("gates", "g", "optional"), True, "gates.g.default", "needs a default"),
    (GDN, ("params", "scale", "default"), "K**-0.5 + open", "params.scale.default", "only use the dims"),
    (GDN, ("params", "scale", "default"), "exp(K)", "params.scale.default", "may not call"),
    (GDN, ("solver",), {"method": "cg", "iters": 3}, "solver", "never calls solve"),
    (GKA, ("solver",), _DELETE, "solver", "state the solver"),
    (GKA, ("solver", "iters"), "ridge_ratio", "solver.iters", "int param"),
    (GKA, ("solver", "method"), "newton", "solver.method", "Input should be"),
    (GKA, ("readout", "lam"), "ridge_ratio*fro(U)", "readout", "lambda"),
    (GKA, ("readout", "x"), "solve(H + lam*I, k*2)", "readout", "input vector"),
    (GKA, ("readout", "x"), "solve(H + lam, q)", "readout.x", "write lam*I"),
    (GKA, ("readout", "qm"), "q + alpha*(x - q) + x*x", "readout", "combination"),
    (GKA, ("update", "H"), "exp(gk)*H + k*q.T", "update.H", "must accumulate u*u.T"),
    (GKA, ("update", "H"), "exp(gk)*H + k*k.T + U @ U.T", "update.H", "another state"),
]


@pytest.mark.parametrize("base,path,value,field,words", BAD, ids=[f"{'.'.join(b[1])}={b[2]!r:.30}" for b in BAD])
def test_bad_spec_is_rejected_with_field_and_reason(base, path, value, field, words):
    from gka_gen.symbolic.canonical import canonicalize

    with pytest.raises(SpecError) as info:
        canonicalize(spec_from_dict(_mutate(base, path, value), path="bad.yaml"))
    err = info.value
    assert err.field is not None and err.field.startswith(field), str(err)
    assert words.lower() in err.reason.lower(), str(err)
    assert str(err).startswith("bad.yaml: ") and "\n" not in str(err), str(err)


HOSTILE_FILES = {
    "alias_bomb.yaml": "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b]\n",
    "python_tag.yaml": "name: !!python/object/apply:os.system ['echo pwned']\n",
    "duplicate.yaml": "name: a\nname: b\n",
    "not_mapping.yaml": "- 1\n- 2\n",
    "binary.yaml": "\xff\xfe\x00",
    "huge.yaml": "name: " + "x" * 70_000 + "\n",
    "bad_yaml.yaml": "name: [unclosed\n",
}


@pytest.mark.parametrize("fname", sorted(HOSTILE_FILES))
def test_hostile_files_fail_cleanly_through_the_cli(tmp_path, fname):
    path = tmp_path / fname
    content = HOSTILE_FILES[fname]
    path.write_bytes(content.encode("latin-1") if fname == "binary.yaml" else content.encode())
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.output
    assert "Traceback" not in result.output


def test_missing_file_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read file" in result.output


def test_cli_validate_show_list_on_the_six_specs():
    runner = CliRunner()
    res = runner.invoke(app, ["validate", *map(str, SPECS)])
    assert res.exit_code == 0 and res.output.count("ok ") == len(SPECS)
    res = runner.invoke(app, ["show", str(SPECS[0].parent / "gka.yaml")])
    assert res.exit_code == 0
    assert "ridge_ratio · ‖H_t‖_F" in res.output and "chebyshev" in res.output
    assert "chunk_gka(q, k, v, g=0, gk='g', alpha=1, scale='K**-0.5', ridge_ratio=0.02, num_iter=30" in res.output
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and all(n in res.output for n in ("deltanet", "gka", "mesanet"))
    for cmd in ("validate", "show", "list", "ir", "generate"):
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0


def test_expression_parser_never_evaluates():
    # A name that would be dangerous if evaluated is just an unknown symbol to the shape checker.
    node = E.parse_expr("open + exec", field="f")
    assert E.names(node) == {"open", "exec"}
    with pytest.raises(SpecError, match="unknown symbol 'open'"):
        E.infer_shape(node, {}, field="f")


def test_spec_hash_ignores_comments_and_tracks_content(tmp_path):
    src = (SPECS[0].parent / "gka.yaml").read_text()
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(src)
    b.write_text("# another comment\n" + src)
    assert load_spec(a).hash == load_spec(b).hash
    b.write_text(src.replace("default: 0.02", "default: 0.03"))
    assert load_spec(a).hash != load_spec(b).hash
