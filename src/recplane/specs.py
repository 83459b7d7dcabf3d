"""Reading user-written specs (datasets, training jobs): YAML from a file or text, and pydantic errors as one line.

Every spec loader accepts the same forms — an object, a mapping, YAML text or a YAML file path — and reports
problems the same way, naming where the spec came from and each bad field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from recplane.errors import InvalidSpec

__all__ = ["problems_of", "read_yaml_mapping"]


def _is_path(source: str | Path) -> bool:
    if isinstance(source, Path):
        return True
    short_line = len(source) < 4096 and "\n" not in source
    return short_line and (Path(source).is_file() or source.endswith((".yaml", ".yml")))


def read_yaml_mapping(source: str | Path, *, what: str, needs: str) -> tuple[dict[str, Any], str]:
    """``(mapping, origin)`` from a YAML file path or YAML text; ``what`` names the spec kind in errors and
    ``needs`` the keys a spec must have at least (for the not-a-mapping error)."""
    text, origin = str(source), "the given YAML"
    if _is_path(source):
        path = Path(source)
        if not path.is_file():
            raise InvalidSpec(f"{what} file {path} does not exist.")
        text, origin = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{origin} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidSpec(f"{origin} must be a mapping with at least {needs}.")
    return data, origin


def problems_of(exc: ValidationError) -> str:
    """Every field error of a pydantic validation, ``field.path: message`` joined by ``; ``."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors())
