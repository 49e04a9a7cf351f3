"""The training targets: one-hot, except that returns share some mass with the user's other own
advertisers (the trainer passes an own list for returns only, None for repeats and new ones)."""

import pytest

torch = pytest.importorskip("torch")

from adcast.train.trainer import soft_targets  # noqa: E402


def test_a_return_spreads_the_smoothing_over_the_users_own_advertisers() -> None:
    q = soft_targets([2], [[2, 5, 7, 9]], n=10, smoothing=0.3)
    assert q.shape == (1, 10)
    assert q[0, 2].item() == pytest.approx(0.7 + 0.3 / 4)
    for other in (5, 7, 9):
        assert q[0, other].item() == pytest.approx(0.3 / 4)
    assert q[0, [0, 1, 3, 4, 6, 8]].abs().sum().item() == 0.0


def test_other_targets_or_no_smoothing_stay_one_hot() -> None:
    one_hot = torch.nn.functional.one_hot(torch.tensor([4, 1, 3]), 8).float()
    assert torch.equal(soft_targets([4, 1, 3], [None, None, None], n=8, smoothing=0.5), one_hot)
    assert torch.equal(soft_targets([4, 1, 3], [[2, 4], [1], [3, 6]], n=8, smoothing=0.0), one_hot)


@pytest.mark.parametrize("smoothing", [0.0, 0.3, 1.0])
def test_every_row_is_a_distribution(smoothing: float) -> None:
    targets = [0, 3, 3, 6]
    owns = [[0], [1, 3], None, [2, 4, 6, 7]]
    q = soft_targets(targets, owns, n=8, smoothing=smoothing)
    assert torch.allclose(q.sum(dim=1), torch.ones(4))
    assert (q >= 0).all()
    # the engaged advertiser always holds the largest share of its row
    assert all(q[r, t] == q[r].max() for r, t in enumerate(targets))
