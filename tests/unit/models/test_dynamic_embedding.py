"""The dynamic (collisionless, growing) embedding table: admission, eviction, growth, checkpoints, optimizers."""

from __future__ import annotations

import copy
import io
from dataclasses import replace

import pytest
import torch

from recplane.models.dynamic_embedding import DynamicEmbedding, attach_dynamic_tables


def ids(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def test_ids_are_admitted_on_first_sight_with_their_own_vector() -> None:
    torch.manual_seed(0)
    table = DynamicEmbedding(4)
    out = table(torch.tensor([[7, 2**62, -3], [7, 0, 11]]))
    assert out.shape == (2, 3, 4)
    assert table.num_embeddings == 4  # 7, 2**62, -3, 11; padding 0 is never admitted
    assert torch.count_nonzero(out[1, 1]) == 0
    assert torch.equal(out[0, 0], out[1, 0])
    rows = table.rows_of(ids(7, 2**62, -3, 11))
    assert len(set(rows.tolist())) == 4 and bool((rows > 0).all())


def test_ids_below_the_admission_threshold_read_the_shared_zero_vector() -> None:
    table = DynamicEmbedding(4, admit_after=2)
    first = table(ids(5, 6))
    assert torch.count_nonzero(first) == 0
    assert table.stats().pending == 2 and table.num_embeddings == 0
    second = table(ids(5))
    assert torch.count_nonzero(second) > 0
    assert table.num_embeddings == 1 and table.stats().pending == 1
    # Two sightings inside one batch count as two.
    table(ids(9, 9))
    assert table.rows_of(ids(9)).item() > 0


def test_eval_lookups_admit_and_count_nothing() -> None:
    table = DynamicEmbedding(4)
    table(ids(1, 2))
    before = table.stats()
    table.eval()
    out = table(ids(1, 3))
    assert torch.count_nonzero(out[1]) == 0
    assert table.stats() == before and table.step == 1


def test_ttl_evicts_ids_not_seen_for_more_than_ttl_steps() -> None:
    table = DynamicEmbedding(4, ttl_steps=2, sweep_every=1)
    table(ids(1, 2))  # step 1
    table(ids(2))  # step 2
    table(ids(2))  # step 3: id 1 last seen 2 steps ago, still kept
    assert table.rows_of(ids(1)).item() > 0
    table(ids(2))  # step 4: 3 steps ago -> evicted
    assert table.rows_of(ids(1)).item() == 0
    assert table.stats().evicted_total == 1 and table.num_embeddings == 1


def test_lfu_evicts_the_least_frequent_id_and_reuses_its_row() -> None:
    table = DynamicEmbedding(4, max_rows=3)
    table(ids(1, 1, 1, 2, 2, 3))
    row_of_3 = table.rows_of(ids(3)).item()
    table(ids(4))
    assert table.rows_of(ids(3)).item() == 0
    assert table.rows_of(ids(4)).item() == row_of_3
    assert table.rows_of(ids(1, 2)).min().item() > 0
    assert table.num_embeddings == 3


def test_an_evicted_id_seen_again_starts_its_count_over() -> None:
    table = DynamicEmbedding(4, admit_after=2, ttl_steps=1, sweep_every=1)
    table(ids(5, 5))
    table(ids(6))
    table(ids(6))  # id 5 expires
    table(ids(5))
    assert table.rows_of(ids(5)).item() == 0  # one sighting since it came back
    table(ids(5))
    assert table.rows_of(ids(5)).item() > 0


def test_pending_ids_are_capped_by_lfu_too() -> None:
    table = DynamicEmbedding(4, admit_after=3, max_pending=2)
    table(ids(1, 1, 2))
    table(ids(3))
    assert table.stats().pending == 2
    assert table.rows_of(ids(1)).item() == 0
    table(ids(1))
    assert table.rows_of(ids(1)).item() > 0  # 1 kept its two earlier sightings; 2 was dropped


def test_growth_allocates_chunks_and_keeps_existing_vectors() -> None:
    torch.manual_seed(0)
    table = DynamicEmbedding(3, chunk_rows=2)
    early = table(ids(1, 2)).detach().clone()
    assert table.capacity == 3
    table(torch.arange(3, 40))
    assert table.capacity >= 40 and table.num_embeddings == 39
    assert torch.equal(table(ids(1, 2)).detach(), early)
    assert table.memory_bytes() > 40 * 3 * 4


def test_many_steps_with_new_ids_keep_the_mapping_consistent() -> None:
    # Exercises the delta index, its merges, eviction and compaction against a dict kept on the side.
    torch.manual_seed(1)
    table = DynamicEmbedding(2, ttl_steps=5, sweep_every=3, chunk_rows=8)
    last_seen: dict[int, int] = {}
    for step in range(1, 60):
        batch = torch.randint(1, 400, (30,))
        table(batch)
        for value in batch.tolist():
            last_seen[value] = step
        if step % 3 == 0:
            last_seen = {k: s for k, s in last_seen.items() if step - s <= 5}
    rows = table.rows_of(torch.tensor(sorted(last_seen)))
    assert bool((rows > 0).all()) and len(set(rows.tolist())) == len(last_seen)
    assert table.num_embeddings == len(last_seen)


def test_state_dict_round_trips_mapping_counts_rows_and_outputs() -> None:
    torch.manual_seed(2)
    def build() -> DynamicEmbedding:
        return DynamicEmbedding(3, admit_after=2, ttl_steps=4, sweep_every=2, chunk_rows=4)

    table = build()
    for _ in range(12):
        table(torch.randint(1, 30, (16,)))
    buffer = io.BytesIO()
    torch.save(table.state_dict(), buffer)
    buffer.seek(0)
    restored = build()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    probe = torch.arange(0, 35)
    assert torch.equal(restored.rows_of(probe), table.rows_of(probe))
    # Same counters; memory may differ only by the spare capacity of the entry arrays.
    assert replace(restored.stats(), memory_bytes=0) == replace(table.stats(), memory_bytes=0)
    assert restored.step == table.step
    table.eval(), restored.eval()
    assert torch.equal(restored(probe), table(probe))
    # Training goes on identically from the checkpoint.
    table.train(), restored.train()
    torch.manual_seed(3)
    table(torch.arange(20, 50))
    torch.manual_seed(3)
    restored(torch.arange(20, 50))
    assert torch.equal(restored.rows_of(probe), table.rows_of(probe))
    assert torch.equal(restored.weight, table.weight)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")
@pytest.mark.parametrize("optimizer_name", ["SparseAdam", "Adagrad"])
def test_sparse_optimizers_keep_training_across_growth_and_eviction(optimizer_name: str) -> None:
    torch.manual_seed(4)
    table = DynamicEmbedding(4, chunk_rows=2, max_rows=12, init_std=0.1)
    optimizer_class = getattr(torch.optim, optimizer_name)
    optimizer = optimizer_class(table.parameters(), lr=0.1)
    table.attach_optimizer(optimizer)
    target = torch.ones(4)
    first_losses: list[float] = []
    last_losses: list[float] = []
    loss = torch.zeros(())
    for step in range(40):
        # Ids 1..8 always, plus a new id per step: growth first, then LFU eviction of the one-off ids.
        batch = torch.cat([torch.arange(1, 9), torch.tensor([100 + step])])
        optimizer.zero_grad()
        # The previous step's loss is still alive here, as in any training loop.
        loss = (table(batch)[:8] - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        (first_losses if step < 3 else last_losses).append(loss.item())
    assert table.stats().evicted_total > 0 and table.capacity > 3
    assert optimizer.param_groups[0]["params"][0] is table.weight
    state = optimizer.state[table.weight]
    assert state["exp_avg" if "exp_avg" in state else "sum"].shape[0] == table.capacity
    assert last_losses[-1] < 0.05 * first_losses[0]


def test_a_recycled_row_starts_with_zero_optimizer_state() -> None:
    table = DynamicEmbedding(2, max_rows=2)
    optimizer = torch.optim.SparseAdam(table.parameters(), lr=0.1)
    table.attach_optimizer(optimizer)
    for batch in (ids(1, 1, 2), ids(1, 2, 2)):
        optimizer.zero_grad()
        table(batch).sum().backward()
        optimizer.step()
    row = table.rows_of(ids(1)).item()
    assert torch.count_nonzero(optimizer.state[table.weight]["exp_avg"][row]) > 0
    table(ids(3))  # counts: 1 -> 2, 2 -> 3, so 1 is evicted and its row goes to 3
    assert table.rows_of(ids(3)).item() == row
    assert torch.count_nonzero(optimizer.state[table.weight]["exp_avg"][row]) == 0


def test_attaching_an_optimizer_without_the_table_weight_is_refused() -> None:
    table = DynamicEmbedding(2)
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="does not hold this table's weight"):
        table.attach_optimizer(other)


def test_attach_dynamic_tables_finds_every_dynamic_table_of_a_model_and_follows_growth() -> None:
    users, items = DynamicEmbedding(2, chunk_rows=1, sparse=False), DynamicEmbedding(2)
    model = torch.nn.ModuleDict({"user": users, "item": items})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    assert attach_dynamic_tables(model, optimizer) == 2
    for step in range(3):
        optimizer.zero_grad()
        users(torch.tensor([10 * step + 1, 10 * step + 2])).sum().backward()
        optimizer.step()
    assert users.capacity >= 7
    assert any(p is users.weight for p in optimizer.param_groups[0]["params"])
    assert optimizer.state[users.weight]["exp_avg"].shape == users.weight.shape


def test_a_table_with_an_attached_optimizer_can_be_pickled_and_deep_copied() -> None:
    table = DynamicEmbedding(2)
    table.attach_optimizer(torch.optim.SparseAdam(table.parameters()))
    table(ids(1, 2))
    buffer = io.BytesIO()
    torch.save(table, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded.rows_of(ids(1, 2)), table.rows_of(ids(1, 2)))
    assert torch.equal(copy.deepcopy(table).weight, table.weight)
