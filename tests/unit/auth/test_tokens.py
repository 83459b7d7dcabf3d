"""API tokens: stored hashed, one team each, revocable."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from recplane.auth import authenticate, create_token, list_tokens, revoke_token
from recplane.catalog import Catalog
from recplane.errors import Forbidden, InvalidInput, Unauthenticated


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(f"sqlite:///{tmp_path / 'c.db'}")


def test_token_authenticates_as_its_team(catalog: Catalog) -> None:
    token = create_token(catalog, "recsys", "trainer")
    assert token.secret and token.secret.startswith("rp_")
    assert authenticate(catalog, token.secret).team == "recsys"


def test_secret_is_never_stored_in_clear(catalog: Catalog) -> None:
    token = create_token(catalog, "recsys")
    with catalog.engine.connect() as connection:
        stored = [tuple(row) for row in connection.execute(sa.text("SELECT * FROM api_tokens"))]
    assert token.secret is not None
    assert all(token.secret not in str(row) for row in stored)
    assert all(t.secret is None for t in list_tokens(catalog))


def test_unknown_missing_and_revoked_tokens_are_refused(catalog: Catalog) -> None:
    token = create_token(catalog, "ads")
    with pytest.raises(Unauthenticated):
        authenticate(catalog, None)
    with pytest.raises(Unauthenticated):
        authenticate(catalog, "rp_not-a-token")
    revoke_token(catalog, token.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticate(catalog, token.secret)


def test_principal_of_one_team_cannot_touch_another_teams_objects(catalog: Catalog) -> None:
    principal = authenticate(catalog, create_token(catalog, "ads").secret)
    principal.require("ads", "Dataset 'clicks'")
    with pytest.raises(Forbidden, match="belongs to team 'search'"):
        principal.require("search", "Dataset 'queries'")


def test_team_names_are_validated(catalog: Catalog) -> None:
    with pytest.raises(InvalidInput):
        create_token(catalog, "bad team!")
