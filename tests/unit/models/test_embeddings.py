"""Fixed and hashed embedding tables: shapes, padding, sparse gradients, hashing and collision rates."""

from __future__ import annotations

import pytest
import torch

from recplane.models.embeddings import FixedEmbedding, HashedEmbedding, hash_ids, shared_code_fraction

_U64 = (1 << 64) - 1


def _splitmix_reference(value: int, seed: int = 0) -> int:
    """The same hash in plain Python integers (unbounded, masked to 64 bits by hand)."""
    z = (value + (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) + 0x9E3779B97F4A7C15) & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


def test_fixed_table_maps_any_id_shape_to_vectors_and_pads_id_zero() -> None:
    table = FixedEmbedding(10, 8)
    out = table(torch.tensor([[0, 3, 9], [1, 2, 0]]))
    assert out.shape == (2, 3, 8)
    assert torch.count_nonzero(out[0, 0]) == 0 and torch.count_nonzero(out[1, 2]) == 0
    assert table.num_embeddings == 10 and table.dim == 8
    assert table.memory_bytes() == 10 * 8 * 4
    assert table.collision_rate(torch.arange(10)) == 0.0


def test_fixed_table_with_sparse_gradients_touches_only_looked_up_rows() -> None:
    table = FixedEmbedding(10, 4, sparse=True)
    table(torch.tensor([0, 2, 2, 5])).sum().backward()
    grad = table.weight.grad
    assert grad is not None and grad.is_sparse
    touched = set(grad.coalesce().indices()[0].tolist())
    assert touched <= {0, 2, 5}
    assert torch.all(grad.to_dense()[0] == 0)  # padding gets no gradient


def test_hash_matches_a_plain_python_splitmix64_on_edge_values() -> None:
    values = [0, 1, 2, -1, 123_456_789, 2**62, -(2**63), 2**63 - 1]
    for seed in (0, 3):
        expected = [_splitmix_reference(v & _U64, seed) for v in values]
        assert hash_ids(torch.tensor(values), seed).tolist() == expected
    assert bool((hash_ids(torch.tensor(values)) >= 0).all())


@pytest.mark.parametrize("scheme", ["qr", "multi_hash"])
def test_hashed_table_accepts_raw_ids_of_any_range(scheme: str) -> None:
    table = HashedEmbedding(64, 8, scheme=scheme)  # type: ignore[arg-type]
    ids = torch.tensor([[0, -5, 2**62], [7, 10**15, 3]])
    out = table(ids)
    assert out.shape == (2, 3, 8)
    assert torch.count_nonzero(out[0, 0]) == 0  # padding id 0
    assert torch.count_nonzero(out[0, 1]) > 0
    assert torch.equal(table(ids), out)  # deterministic
    assert table.memory_bytes() == 64 * 8 * 4


def test_qr_without_hashing_collides_exactly_as_computed_by_hand() -> None:
    # 4 rows -> 2 quotient x 2 remainder rows -> a virtual vocabulary of 4 ids: v = id % 4.
    table = HashedEmbedding(4, 2, scheme="qr", hash_ids=False)
    # ids 1..6 -> v = 1, 2, 3, 0, 1, 2: ids 1 and 5 share a code, so do 2 and 6; 3 and 4 are alone.
    assert table.collision_rate(torch.tensor([1, 2, 3, 4, 5, 6])) == pytest.approx(4 / 6)
    assert torch.equal(table(torch.tensor([1])), table(torch.tensor([5])))
    assert not torch.equal(table(torch.tensor([1])), table(torch.tensor([3])))
    # Ids inside the virtual vocabulary never collide: 64 rows cover 32 x 32 = 1024 ids.
    assert HashedEmbedding(64, 2, scheme="qr", hash_ids=False).collision_rate(torch.arange(1, 1024)) == 0.0


def test_collision_rate_counts_distinct_ids_sharing_every_row_of_their_code() -> None:
    codes = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 1], [2, 2], [2, 2], [2, 2]])
    # rows 0,1 share; rows 4,5,6 share; rows 2 and 3 are unique -> 5 of 7.
    assert shared_code_fraction(codes, (3, 3)) == pytest.approx(5 / 7)
    # The wide-code path (product of sizes past int64) gives the same answer.
    assert shared_code_fraction(codes, (2**40, 2**40)) == pytest.approx(5 / 7)


def test_multi_hash_collision_rate_agrees_with_a_brute_force_count() -> None:
    table = HashedEmbedding(40, 2, scheme="multi_hash", num_hashes=2)
    ids = torch.arange(1, 301)
    codes = [tuple(code) for code in table.codes(ids).tolist()]
    shared = sum(1 for code in codes if codes.count(code) > 1)
    assert table.collision_rate(ids) == pytest.approx(shared / len(codes))
    assert table.collision_rate(torch.cat([ids, ids, torch.zeros(5, dtype=torch.int64)])) == pytest.approx(
        shared / len(codes)
    )


def test_two_row_codes_collide_far_less_than_the_hashing_trick_at_equal_memory() -> None:
    ids = torch.arange(1, 2001)
    single = HashedEmbedding(200, 2, scheme="multi_hash", num_hashes=1).collision_rate(ids)
    double = HashedEmbedding(200, 2, scheme="multi_hash", num_hashes=2).collision_rate(ids)
    qr = HashedEmbedding(200, 2, scheme="qr").collision_rate(ids)
    assert single > 0.99
    assert double < 0.4 and qr < 0.4


def test_hashed_table_trains_with_sparse_adam() -> None:
    torch.manual_seed(0)
    table = HashedEmbedding(50, 4, scheme="qr", sparse=True)
    optimizer = torch.optim.SparseAdam(table.parameters(), lr=0.05)
    ids, target = torch.tensor([11, 12_345, 999_999_937]), torch.ones(3, 4)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = (table(ids) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_invalid_hashed_configurations_are_rejected_with_the_value() -> None:
    with pytest.raises(ValueError, match="num_hashes=5"):
        HashedEmbedding(4, 2, scheme="multi_hash", num_hashes=5)
    with pytest.raises(ValueError, match="hash_ids=False"):
        HashedEmbedding(4, 2, scheme="multi_hash", hash_ids=False)
    with pytest.raises(ValueError, match="'cuckoo'"):
        HashedEmbedding(4, 2, scheme="cuckoo")  # type: ignore[arg-type]
