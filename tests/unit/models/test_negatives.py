"""Negative samplers: uniform and popularity distributions, rejection of positives, logQ helpers."""

from __future__ import annotations

import math

import pytest
import torch

from recplane.models.negatives import InteractionSet, NegativeSampler, item_log_frequency


def _frequencies(samples: torch.Tensor, num_items: int) -> torch.Tensor:
    return torch.bincount(samples.reshape(-1), minlength=num_items).double() / samples.numel()


def test_uniform_sampler_covers_real_items_evenly_and_never_draws_padding() -> None:
    sampler = NegativeSampler.uniform(11)
    samples = sampler.sample(torch.zeros(20_000, dtype=torch.int64), 10, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20_000, 10)
    frequencies = _frequencies(samples, 11)
    assert frequencies[0] == 0
    assert torch.allclose(frequencies[1:], torch.full((10,), 0.1, dtype=torch.float64), atol=0.005)


def test_popularity_sampler_follows_counts_to_the_power_alpha() -> None:
    counts = torch.tensor([50, 1, 2, 3, 4, 0, 10])  # the padding id's count is ignored
    for alpha in (1.0, 0.5):
        sampler = NegativeSampler.popularity(counts, alpha=alpha)
        samples = sampler.sample(torch.zeros(50_000, dtype=torch.int64), 4, generator=torch.Generator().manual_seed(1))
        expected = counts.double() ** alpha
        expected[0] = 0.0
        expected /= expected.sum()
        assert torch.allclose(_frequencies(samples, 7), expected, atol=0.005)
        assert int((samples == 5).sum()) == 0  # never-seen item
        assert torch.allclose(sampler.log_prob(torch.tensor([1, 6])), expected[[1, 6]].log().float())


def test_sampler_avoids_each_rows_own_positive() -> None:
    sampler = NegativeSampler.uniform(4)
    positives = torch.tensor([1, 2, 3] * 100)
    samples = sampler.sample(torch.zeros(300, dtype=torch.int64), 5, positives=positives)
    assert not bool((samples == positives.unsqueeze(1)).any())


def test_sampler_with_an_interaction_set_avoids_every_training_item_of_the_user() -> None:
    users = torch.tensor([1, 1, 1, 2, 2])
    items = torch.tensor([1, 2, 3, 4, 5])
    seen = InteractionSet(users, items, num_items=7)
    assert seen.contains(torch.tensor([1, 1, 2]), torch.tensor([3, 4, 4])).tolist() == [True, False, True]
    sampler = NegativeSampler.popularity(torch.tensor([0, 9, 9, 9, 9, 9, 1]), exclude=seen, max_rounds=50)
    query = torch.tensor([1, 2] * 200)
    samples = sampler.sample(query, 3, generator=torch.Generator().manual_seed(2))
    assert not bool(seen.contains(query.unsqueeze(1), samples).any())
    assert set(samples[query == 1].reshape(-1).tolist()) <= {4, 5, 6}


def test_same_generator_seed_gives_the_same_negatives() -> None:
    sampler = NegativeSampler.uniform(100)
    users = torch.arange(64)
    first = sampler.sample(users, 3, generator=torch.Generator().manual_seed(7))
    second = sampler.sample(users, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_uniform_log_prob_is_minus_log_of_real_item_count() -> None:
    assert NegativeSampler.uniform(11).log_prob(torch.tensor([3])).item() == pytest.approx(-math.log(10))


def test_item_log_frequency_is_the_log_share_of_interactions_with_unseen_items_finite() -> None:
    logq = item_log_frequency(torch.tensor([0, 3, 1, 0]))
    assert logq.tolist() == pytest.approx([math.log(1 / 4), math.log(3 / 4), math.log(1 / 4), math.log(1 / 4)])


def test_invalid_sampler_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_items=1"):
        NegativeSampler.uniform(1)
    with pytest.raises(ValueError, match="all zero"):
        NegativeSampler.popularity(torch.tensor([5, 0, 0]))
    with pytest.raises(ValueError, match="differ in shape"):
        InteractionSet(torch.tensor([1, 2]), torch.tensor([1]), num_items=3)
