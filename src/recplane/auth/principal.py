"""Who is asking: a team (from an API token) or the local administrator (embedded mode, CLI on the box)."""

from __future__ import annotations

from dataclasses import dataclass

from recplane.errors import Forbidden

__all__ = ["ADMIN", "Principal"]


@dataclass(frozen=True)
class Principal:
    """The caller of an operation. ``team=None`` means the administrator, who may touch every team's data."""

    team: str | None

    @property
    def is_admin(self) -> bool:
        """True for the local administrator."""
        return self.team is None

    def can_access(self, team: str) -> bool:
        """Whether this caller may read or write objects owned by ``team``."""
        return self.is_admin or self.team == team

    def require(self, team: str, what: str) -> None:
        """Raise Forbidden unless this caller may touch ``what``, owned by ``team``."""
        if not self.can_access(team):
            raise Forbidden(f"{what} belongs to team {team!r}; your token is for team {self.team!r}.")

    @property
    def name(self) -> str:
        """A label for history entries (the author of a change)."""
        return "admin" if self.team is None else f"team:{self.team}"


ADMIN = Principal(team=None)
