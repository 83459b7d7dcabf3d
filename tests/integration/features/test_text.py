"""The real all-MiniLM-L6-v2 (bundled, offline) and the embeddings dataset: computed once, reused, replaced.

The model is loaded once for the whole session (``minilm``); every test shares it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import typer
from tests.fixtures.server import ServerProcess
from typer.testing import CliRunner

from recplane import Client
from recplane.cli import features
from recplane.cli.context import CliState
from recplane.config import Settings
from recplane.features import MiniLMEncoder, embed_item_text

pytestmark = pytest.mark.integration

ITEMS = [
    {"item_id": 1, "title": "Toy Story", "genres": ["Animation", "Children's", "Comedy"]},
    {"item_id": 2, "title": "GoldenEye", "genres": ["Action", "Adventure", "Thriller"]},
    {"item_id": 3, "title": "Toy Story 2", "genres": ["Animation", "Children's", "Comedy"]},
    {"item_id": 4, "title": "Schindler's List", "genres": ["Drama", "War"]},
]
ITEMS_SPEC = {"columns": {"item_id": "int64", "title": "string", "genres": "list<string>"}}


@pytest.fixture(scope="session")
def minilm() -> MiniLMEncoder:
    encoder = MiniLMEncoder(batch_size=16)
    encoder.encode(["warm up"])
    return encoder


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as client:
        client.create_dataset({"name": "items", **ITEMS_SPEC})
        client.ingest("items", ITEMS)
        yield client


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vectors_are_384_float32_unit_length_and_deterministic(minilm: MiniLMEncoder) -> None:
    texts = ["Toy Story", "GoldenEye", "Heat"]
    first, second = minilm.encode(texts), minilm.encode(texts)
    assert first.shape == (3, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)


def test_similar_titles_are_closer_than_unrelated_ones(minilm: MiniLMEncoder) -> None:
    toy, toy2, war = minilm.encode(
        [
            "Toy Story. Genres: Animation, Comedy",
            "Toy Story 2. Genres: Animation, Comedy",
            "Schindler's List. Genres: War",
        ]
    )
    assert _cosine(toy, toy2) > _cosine(toy, war) + 0.2


def test_progress_is_reported_per_batch(minilm: MiniLMEncoder) -> None:
    done: list[int] = []
    minilm.encode([f"title {n}" for n in range(20)], on_progress=done.append)
    assert done == [16, 4]


def test_first_run_embeds_every_item_into_a_vector_column(client: Client, minilm: MiniLMEncoder) -> None:
    result = embed_item_text(
        client, source="items", target="item_text", text_columns=["title", "genres"], encoder=minilm, progress=False
    )
    assert (result.total, result.encoded, result.reused, result.written) == (4, 4, 0, True)
    table = client.read("item_text").sort_by("item_id")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    assert table["text"][0].as_py() == "Toy Story. Genres: Animation, Children's, Comedy"
    assert set(table["model"].to_pylist()) == {"all-MiniLM-L6-v2"}
    expected = minilm.encode(table["text"].to_pylist())
    np.testing.assert_allclose(np.stack(table["embedding"].to_numpy(zero_copy_only=False)), expected, atol=1e-5)


def test_rerun_with_unchanged_text_encodes_nothing_and_writes_no_version(client: Client, minilm: MiniLMEncoder) -> None:
    first = embed_item_text(
        client, source="items", target="item_text", text_columns=["title"], encoder=minilm, progress=False
    )
    again = embed_item_text(
        client, source="items", target="item_text", text_columns=["title"], encoder=minilm, progress=False
    )
    assert (again.encoded, again.reused, again.written, again.version) == (0, 4, False, first.version)
    assert len(client.history("item_text")) == 2  # create + the first run


def test_changed_text_reencodes_exactly_that_item_and_keeps_one_row_per_item(
    client: Client, minilm: MiniLMEncoder
) -> None:
    first = embed_item_text(
        client, source="items", target="item_text", text_columns=["title"], encoder=minilm, progress=False
    )
    before = client.read("item_text").sort_by("item_id")
    client.create_dataset({"name": "items_edited", **ITEMS_SPEC})
    edited = [dict(item, title="Goldfinger") if item["item_id"] == 2 else item for item in ITEMS]
    client.ingest("items_edited", edited)

    result = embed_item_text(
        client, source="items_edited", target="item_text", text_columns=["title"], encoder=minilm, progress=False
    )

    assert (result.encoded, result.reused, result.total) == (1, 3, 4)
    after = client.read("item_text").sort_by("item_id")
    assert after["item_id"].to_pylist() == [1, 2, 3, 4]
    assert after["text"][1].as_py() == "Goldfinger"
    old, new = (np.stack(t["embedding"].to_numpy(zero_copy_only=False)) for t in (before, after))
    np.testing.assert_array_equal(new[[0, 2, 3]], old[[0, 2, 3]])
    assert not np.allclose(new[1], old[1])
    # Time travel still reads the vectors of the first run.
    assert client.read("item_text", version=first.version).sort_by("item_id").equals(before)


def test_items_missing_from_the_source_version_are_removed(client: Client, minilm: MiniLMEncoder) -> None:
    client.ingest("items", [{"item_id": 5, "title": "Heat", "genres": ["Action"]}])
    embed_item_text(client, source="items", target="item_text", text_columns=["title"], encoder=minilm, progress=False)
    result = embed_item_text(
        client,
        source="items",
        target="item_text",
        text_columns=["title"],
        encoder=minilm,
        source_version=1,
        progress=False,
    )
    assert (result.total, result.removed, result.encoded, result.source_version) == (4, 1, 0, 1)
    assert sorted(client.read("item_text")["item_id"].to_pylist()) == [1, 2, 3, 4]


def test_a_remote_client_embeds_through_the_server(
    server_factory: Callable[..., ServerProcess], tmp_path: Path, minilm: MiniLMEncoder
) -> None:
    server = server_factory(tmp_path / "served", dev=True)
    with Client(server.url) as remote:
        remote.create_dataset({"name": "items", **ITEMS_SPEC})
        remote.ingest("items", ITEMS)
        first = embed_item_text(
            remote, source="items", target="item_text", text_columns=["title"], encoder=minilm, progress=False
        )
        remote.ingest("items", [{"item_id": 5, "title": "Heat", "genres": ["Action"]}])
        second = embed_item_text(
            remote, source="items", target="item_text", text_columns=["title"], encoder=minilm, progress=False
        )
        table = remote.read("item_text").sort_by("item_id")
        newest = remote.history("item_text")[0]
    assert (first.encoded, second.encoded, second.reused, second.version) == (4, 1, 4, first.version + 1)
    assert table["item_id"].to_pylist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(
        np.stack(table["embedding"].to_numpy(zero_copy_only=False)), minilm.encode(table["text"].to_pylist()), atol=1e-5
    )
    assert (newest.operation, newest.rows_added, newest.rows_removed) == ("replace", 5, 4)
    assert (newest.metadata["encoded"], newest.metadata["reused"], newest.metadata["source_version"]) == (1, 4, 2)


def test_cli_embeds_text_and_a_rerun_reports_unchanged(settings: Settings, minilm: MiniLMEncoder) -> None:
    with Client(settings=settings) as client:
        client.create_dataset({"name": "items", **ITEMS_SPEC})
        client.ingest("items", ITEMS)
    root = typer.Typer()

    @root.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = CliState(home=settings.home)

    root.add_typer(features.app, name="features")
    args = ["features", "embed-text", "--source", "items", "--target", "item_text", "--columns", "title,genres"]
    runner = CliRunner()
    first = runner.invoke(root, args)
    assert first.exit_code == 0, first.output
    assert "4 items in item_text (version 1): 4 encoded" in first.output
    again = runner.invoke(root, [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert '"encoded": 0' in again.output and '"written": false' in again.output
