"""The training targets: one-hot, except that a return shares some mass with the user's other own
advertisers, and a new advertiser with the other advertisers of its category."""

import pytest

torch = pytest.importorskip("torch")

from adcast.core.examples import Example  # noqa: E402
from adcast.core.history import HistoryEvent  # noqa: E402
from adcast.train.trainer import TrainConfig, _spreads, soft_targets  # noqa: E402


def test_a_spread_shares_its_part_of_the_target_evenly() -> None:
    q = soft_targets([2], [([2, 5, 7, 9], 0.3)], n=10)
    assert q.shape == (1, 10)
    assert q[0, 2].item() == pytest.approx(0.7 + 0.3 / 4)
    for other in (5, 7, 9):
        assert q[0, other].item() == pytest.approx(0.3 / 4)
    assert q[0, [0, 1, 3, 4, 6, 8]].abs().sum().item() == 0.0


def test_no_spread_or_a_zero_share_stays_one_hot() -> None:
    one_hot = torch.nn.functional.one_hot(torch.tensor([4, 1, 3]), 8).float()
    assert torch.equal(soft_targets([4, 1, 3], [None, None, None], n=8), one_hot)
    assert torch.equal(soft_targets([4, 1, 3], [([2, 4], 0.0), ([1], 0.0), ([3, 6], 0.0)], n=8), one_hot)


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_every_row_is_a_distribution_led_by_its_target(share: float) -> None:
    targets = [0, 3, 3, 6]
    spreads = [([0], share), ([1, 3], share), None, ([2, 4, 6, 7], share)]
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
    cfg = TrainConfig(return_smoothing=0.3, new_smoothing=0.2)
    examples = [_example("c", ("a", "c")), _example("b", ("c",)), _example("d", ("a",))]
    assert _spreads(examples, advertisers, index, cfg) == [([0, 2], 0.3), ([0, 1], 0.2), None]
