"""One jinja2 environment for every template, so rendering is deterministic everywhere."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

TEMPLATE_ROOT = Path(__file__).resolve().parents[2] / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    # StrictUndefined: a context key a template expects but the IR did not provide is a
    # compiler bug, and must fail loudly instead of rendering an empty string into a kernel.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_ROOT)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **ctx) -> str:
    """Render ``templates/<template>`` with ``ctx``."""
    return environment().get_template(template).render(**ctx)


def render_package(template_dir: str, out_dir: Path, **ctx) -> list[Path]:
    """Render every ``*.py.j2`` under ``templates/<template_dir>`` into ``out_dir`` (same stems).

    The rendered files form one Python package (an ``__init__.py.j2`` is expected among them).
    Returns the written paths, sorted.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted((TEMPLATE_ROOT / template_dir).glob("*.py.j2")):
        dst = out_dir / src.name[: -len(".j2")]
        dst.write_text(render(f"{template_dir}/{src.name}", **ctx))
        written.append(dst)
    return written
