"""Item text → one string per item, its hash, the embeddings spec, and the errors raised before any model loads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pyarrow as pa
import pytest

from recplane import Client
from recplane.config import Settings
from recplane.errors import InvalidInput
from recplane.features import MiniLMEncoder, embed_item_text, render_texts
from recplane.features.text import embeddings_spec, text_sha256
from recplane.lake import load_spec

ITEMS = pa.table(
    {
        "item_id": pa.array([1, 2], pa.int64()),
        "title": ["Toy Story", None],
        "release_year": pa.array([1995, None], pa.int32()),
        "genres": pa.array([["Animation", "Children's", "Comedy"], []], pa.list_(pa.string())),
    }
)


def test_default_text_puts_first_column_bare_and_labels_the_rest() -> None:
    texts = render_texts(ITEMS, ["title", "release_year", "genres"])
    assert texts == ["Toy Story. Release year: 1995. Genres: Animation, Children's, Comedy", ""]


def test_template_fills_named_columns_and_joins_lists() -> None:
    texts = render_texts(ITEMS, ["title", "release_year", "genres"], "{title} ({release_year}). Genres: {genres}")
    assert texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy"


def test_template_naming_a_column_that_is_not_a_text_column_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"unknown field\(s\) \['year'\]"):
        render_texts(ITEMS, ["title"], "{title} ({year})")


def test_missing_text_column_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"\['plot'\] not found"):
        render_texts(ITEMS, ["title", "plot"])


def test_text_hash_is_sha256_of_utf8() -> None:
    assert text_sha256("Amélie") == hashlib.sha256("Amélie".encode()).hexdigest()
    assert text_sha256("a") != text_sha256("a ")


def test_embeddings_spec_is_a_valid_dataset_spec_with_a_vector_column() -> None:
    spec = load_spec(embeddings_spec("item_text", "int64", 384, team="recsys", source="items"))
    assert spec.arrow_schema().field("embedding").type == pa.list_(pa.float32(), 384)
    assert spec.arrow_schema().field("item_id").type == pa.int64()


def test_encoder_rejects_a_zero_batch_size() -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        MiniLMEncoder(batch_size=0)


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as client:
        client.create_dataset({"name": "items", "columns": {"item_id": "int64", "title": "string"}})
        yield client


def test_empty_source_says_to_load_items_first(client: Client) -> None:
    with pytest.raises(InvalidInput, match="has no rows at version 0: load items"):
        embed_item_text(client, source="items", target="item_text", text_columns=["title"], progress=False)


def test_unknown_text_column_lists_the_valid_ones(client: Client) -> None:
    client.ingest("items", [{"item_id": 1, "title": "Heat"}])
    with pytest.raises(InvalidInput, match=r"Unknown column\(s\) \['plot'\].*'title'"):
        embed_item_text(client, source="items", target="item_text", text_columns=["plot"], progress=False)


def test_repeated_item_ids_are_refused(client: Client) -> None:
    client.ingest("items", [{"item_id": 1, "title": "Heat"}, {"item_id": 1, "title": "Heat (1995)"}])
    with pytest.raises(InvalidInput, match="appear more than once"):
        embed_item_text(client, source="items", target="item_text", text_columns=["title"], progress=False)


def test_a_target_that_is_not_an_embeddings_dataset_is_refused(client: Client) -> None:
    client.ingest("items", [{"item_id": 1, "title": "Heat"}])
    client.create_dataset({"name": "other", "columns": {"item_id": "int64"}})
    with pytest.raises(InvalidInput, match="not an embeddings dataset"):
        embed_item_text(client, source="items", target="other", text_columns=["title"], progress=False)


def test_no_text_columns_is_refused(client: Client) -> None:
    with pytest.raises(InvalidInput, match="at least one text column"):
        embed_item_text(client, source="items", target="item_text", text_columns=[], progress=False)
