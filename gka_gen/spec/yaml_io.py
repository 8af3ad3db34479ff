"""Reading a spec file: safe YAML, bounded size, no aliases, no duplicate keys."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import SpecError

MAX_SPEC_BYTES = 64 * 1024


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that also refuses aliases (billion-laughs) and duplicate keys.

    ``yaml.safe_load`` silently keeps the last of two equal keys, so a spec could state
    one update equation and run another; a reviewer must see exactly what runs.
    """

    def compose_node(self, parent, index):  # noqa: D401 - yaml hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in specs", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """Parse ``path`` into a dict, or raise SpecError naming the file and the reason."""
    path = Path(path)
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read file ({e.strerror or e})", file=name) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"file is {len(raw)} bytes; specs are limited to {MAX_SPEC_BYTES}", file=name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("file is not UTF-8 text", file=name) from None
    try:
        data = yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"invalid YAML{where}: {problem}", file=name) from None
    if not isinstance(data, dict):
        raise SpecError("the top level must be a mapping of fields", file=name)
    return data
