"""Model names, aliases and references (NAME, NAME:3, NAME@production) are parsed and checked with clear errors."""

from __future__ import annotations

import pytest

from recplane.errors import InvalidInput
from recplane.registry import parse_model_ref
from recplane.registry.records import check_alias, check_model_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mf-ml100k", ("mf-ml100k", "latest")),
        ("mf:3", ("mf", 3)),
        ("mf@production", ("mf", "production")),
        ("mf@latest", ("mf", "latest")),
        ("two_towers@candidate-b", ("two_towers", "candidate-b")),
    ],
)
def test_references_name_a_model_and_a_version_alias_or_latest(text: str, expected: tuple[str, object]) -> None:
    assert parse_model_ref(text) == expected


@pytest.mark.parametrize("text", ["mf:", "mf:x", "MF", "mf@", "mf@3", "mf@Prod", "9lives", "mf/1", ""])
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_model_ref(text)


def test_aliases_cannot_look_like_versions_or_latest() -> None:
    assert check_alias("production") == "production"
    for bad in ("latest", "3", "a" * 65, "with space"):
        with pytest.raises(InvalidInput, match="not valid"):
            check_alias(bad)
    assert check_model_name("a" * 128) == "a" * 128
    with pytest.raises(InvalidInput):
        check_model_name("a" * 129)
