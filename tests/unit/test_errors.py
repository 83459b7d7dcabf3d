"""The error tree: stable codes and statuses, and errors that survive the wire."""

from __future__ import annotations

import pytest

from recplane import errors
from recplane.errors import Forbidden, NotFound, Overloaded, RecplaneError, error_from_dict


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_class_round_trips_through_its_wire_form(name: str) -> None:
    cls = getattr(errors, name)
    if not isinstance(cls, type):
        return
    original = cls("something precise went wrong", details={"value": 3})
    rebuilt = error_from_dict(original.to_dict())
    assert type(rebuilt) is cls
    assert rebuilt.message == original.message
    assert rebuilt.details["value"] == 3


def test_codes_are_unique_so_the_client_can_rebuild_the_right_class() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, RecplaneError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))


def test_overloaded_keeps_retry_after_across_the_wire() -> None:
    rebuilt = error_from_dict(Overloaded("queue full", retry_after=2.5).to_dict())
    assert isinstance(rebuilt, Overloaded)
    assert rebuilt.retry_after == 2.5
    assert rebuilt.status == 429


def test_unknown_code_becomes_the_base_error() -> None:
    rebuilt = error_from_dict({"code": "from_the_future", "message": "hm"})
    assert type(rebuilt) is RecplaneError


def test_statuses_match_http_semantics() -> None:
    assert NotFound.status == 404
    assert Forbidden.status == 403
