"""The training targets: one-hot, except that a return shares some mass with the user's other own
advertisers, and a new advertiser with the other advertisers of its category; and the relabelled
copies that move an example's advertiser tokens and its target mass together."""

import random
from collections import Counter

import pytest

torch = pytest.importorskip("torch")

from adcast.core.examples import Example  # noqa: E402
from adcast.core.history import HistoryEvent  # noqa: E402
from adcast.train.targets import Relabeller, Spreads, relabelled_copies, soft_targets  # noqa: E402


def test_a_spread_shares_its_part_of_the_target_evenly() -> None:
    q = soft_targets([2], [([2, 5, 7, 9], 0.3, None)], n=10)
    assert q.shape == (1, 10)
    assert q[0, 2].item() == pytest.approx(0.7 + 0.3 / 4)
    for other in (5, 7, 9):
        assert q[0, other].item() == pytest.approx(0.3 / 4)
    assert q[0, [0, 1, 3, 4, 6, 8]].abs().sum().item() == 0.0


def test_a_weighted_spread_shares_in_proportion_to_its_weights() -> None:
    q = soft_targets([2], [([2, 5, 7], 0.4, [1.0, 1.0, 2.0])], n=8)
    assert q[0, 2].item() == pytest.approx(0.6 + 0.1)
    assert q[0, 5].item() == pytest.approx(0.1) and q[0, 7].item() == pytest.approx(0.2)
    assert q.sum().item() == pytest.approx(1.0)


def test_no_spread_or_a_zero_share_stays_one_hot() -> None:
    one_hot = torch.nn.functional.one_hot(torch.tensor([4, 1, 3]), 8).float()
    assert torch.equal(soft_targets([4, 1, 3], [None, None, None], n=8), one_hot)
    zero_shares = [([2, 4], 0.0, None), ([1], 0.0, [2.0]), ([3, 6], 0.0, None)]
    assert torch.equal(soft_targets([4, 1, 3], zero_shares, n=8), one_hot)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_every_row_is_a_distribution_led_by_its_target(share: float) -> None:
    targets = [0, 3, 3, 6]
    spreads = [([0], share, None), ([1, 3], share, [1.0, 3.0]), None, ([2, 4, 6, 7], share, None)]
    q = soft_targets(targets, spreads, n=8)
    assert torch.allclose(q.sum(dim=1), torch.ones(4))
    assert (q >= 0).all()
    assert all(q[r, t] == q[r].max() for r, t in enumerate(targets))


def _example(target: str, own: tuple[str, ...]) -> Example:
    event = HistoryEvent(1, "view", own[0] if own else None)
    return Example("u", 2, {}, (event,), target, own)


def test_returns_share_with_own_advertisers_and_new_ones_with_their_category() -> None:
    advertisers = [
        {"advertiser_id": "a", "category": "shoes"},
        {"advertiser_id": "b", "category": "shoes"},
        {"advertiser_id": "c", "category": "pets"},
        {"advertiser_id": "d", "category": None},
    ]
    index = {"a": 0, "b": 1, "c": 2, "d": 3}
    examples = [_example("c", ("a", "c")), _example("b", ("c",)), _example("d", ("a",)), _example("b", ("d",))]
    # a new advertiser's category shares in proportion to its targets in training, plus one (b: 2)
    counts = Counter(ex.target for ex in examples)
    spreads = Spreads(advertisers, [counts[a["advertiser_id"]] for a in advertisers], 0.3, 0.2)
    found = [spreads.of(index[ex.target], ex.target in ex.own, [index[a] for a in ex.own]) for ex in examples]
    assert found == [
        ([0, 2], 0.3, None),
        ([0, 1], 0.2, [1.0, 3.0]),
        None,
        ([0, 1], 0.2, [1.0, 3.0]),
    ]


def test_a_new_advertiser_the_prompt_shows_shares_with_the_ads_shown_of_its_category() -> None:
    """Clicked from a page, a new advertiser is a draw from what the page showed of its category;
    one the prompt does not show still shares with its whole category."""
    advertisers = [
        {"advertiser_id": "a", "category": "shoes"},
        {"advertiser_id": "b", "category": "shoes"},
        {"advertiser_id": "c", "category": "pets"},
        {"advertiser_id": "d", "category": "shoes"},
    ]
    spreads = Spreads(advertisers, [0, 0, 0, 0], 0.3, 0.2)
    shown = [2, 1, 0, 1]  # c, b, a, b (b shown twice)
    assert spreads.of(0, False, [], shown) == ([0, 1], 0.2, None)
    assert spreads.of(2, False, [], shown) == ([2], 0.2, None)  # alone in its category: one-hot in effect
    assert spreads.of(3, False, [], shown) == ([0, 1, 3], 0.2, [1.0, 1.0, 1.0])
    assert spreads.of(1, True, [1, 2], shown) == ([1, 2], 0.3, None)  # a return shares with own ones
    row = soft_targets([0], [spreads.of(0, False, [], shown)], 4)[0]
    assert row.tolist() == pytest.approx([0.9, 0.1, 0.0, 0.0])


# Relabelling: vocabulary of 20 tokens, advertisers 0..4 are tokens 10..14.
ADVERTISER_TOKENS = [10, 11, 12, 13, 14]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[1, 10, 2, 12, 3], [4, 13, 13, 5, 0], [6, 14, 7, 11, 0]])
    target = soft_targets([2, 3, 1], [([0, 2], 0.3, None), None, None], n=5)
    return ids, target


def test_relabelling_moves_each_advertiser_token_and_its_target_mass_together() -> None:
    ids, target = _batch()
    relabel = Relabeller(ADVERTISER_TOKENS, vocab_size=20)
    new_ids, new_target, perm = relabel(ids, target, [0, 1, 2], random.Random(3))
    assert not torch.equal(new_ids, ids)  # 1 in 120 permutations is the identity; not this seed's
    is_advertiser = ids >= 10
    assert torch.equal(new_ids[~is_advertiser], ids[~is_advertiser])  # words and padding stay
    assert ((new_ids[is_advertiser] >= 10) & (new_ids[is_advertiser] < 15)).all()
    # One permutation: equal tokens stay equal, different ones stay different.
    pairs = {(int(a), int(b)) for a, b in zip(ids[is_advertiser], new_ids[is_advertiser], strict=True)}
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})
    mapping = dict(pairs)
    assert all(mapping[old] == int(perm[old - 10]) + 10 for old in mapping)  # advertiser j became perm[j]
    for row in range(3):
        for old in range(5):
            if old + 10 in mapping:
                assert new_target[row, mapping[old + 10] - 10] == target[row, old]
    assert torch.allclose(new_target.sum(dim=1), torch.ones(3))
    assert torch.equal(new_target.sort(dim=1).values, target.sort(dim=1).values)


def test_only_the_chosen_rows_are_relabelled_and_the_same_rng_relabels_alike() -> None:
    ids, target = _batch()
    before = ids.clone(), target.clone()
    relabel = Relabeller(ADVERTISER_TOKENS, vocab_size=20)
    new_ids, new_target, _ = relabel(ids, target, [1], random.Random(5))
    assert torch.equal(ids, before[0]) and torch.equal(target, before[1])  # the inputs stay
    assert torch.equal(new_ids[[0, 2]], ids[[0, 2]]) and torch.equal(new_target[[0, 2]], target[[0, 2]])
    again = relabel(ids, target, [1], random.Random(5))
    assert torch.equal(again[0], new_ids) and torch.equal(again[1], new_target)
    none = relabel(ids, target, [], random.Random(5))
    assert torch.equal(none[0], ids) and torch.equal(none[1], target) and none[2] is None


@pytest.mark.parametrize("per_example", [0.0, 0.5, 1.0, 2.25])
def test_relabelled_copies_take_each_example_the_asked_number_of_times(per_example: float) -> None:
    copyable = list(range(3, 43))  # 40 examples
    copies = relabelled_copies(copyable, per_example, random.Random(1))
    assert len(copies) == round(per_example * 40)
    assert set(copies) <= set(copyable)
    counts = [copies.count(i) for i in copyable]
    assert min(counts) >= int(per_example) and max(counts) <= int(per_example) + 1


def test_the_copy_score_adds_each_named_advertisers_slot_weights_and_follows_relabelling() -> None:
    from adcast.core.copy import COPY_SLOTS
    from adcast.train.copy_score import CopyScore

    score = CopyScore()
    with torch.no_grad():
        score.weight.copy_(torch.arange(COPY_SLOTS, dtype=torch.float32) + 1)
    slots = [([2, 0, 2], [0, 1, 5]), ([], []), ([1], [3])]
    bias = score(slots, 4, None, [])
    assert bias.tolist() == [[2.0, 0.0, 1.0 + 6.0, 0.0], [0.0] * 4, [0.0, 4.0, 0.0, 0.0]]
    perm = torch.tensor([3, 2, 1, 0])  # advertiser j became perm[j]
    moved = score(slots, 4, perm, [0])
    assert moved[0].tolist() == [0.0, 7.0, 0.0, 2.0] and torch.equal(moved[1:], bias[1:])
    moved.sum().backward()  # trainable: every weight used gets its gradient
    assert score.weight.grad is not None and score.weight.grad[[0, 1, 3, 5]].tolist() == [1.0, 1.0, 1.0, 1.0]
