"""The demo model (`make demo`): trained on a sample of the world's users, measured by `adcast eval`'s
protocol on other users it never saw, and cached with its figures for the next run."""

from __future__ import annotations

import json

import pytest

from adcast.data.files import read_records
from adcast.local.demo import DEMO_QUALITY_FILE, ensure_model
from adcast.model_meta import META_FILE

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


def test_the_demo_model_is_measured_on_users_it_never_saw_and_cached_with_its_figures(small_world, tmp_path, capsys):
    from adcast.evaluate import evaluate

    model = ensure_model(tmp_path, small_world)
    first = capsys.readouterr().out
    sample = tmp_path / "demo-sample"
    trained_on = {p["user_id"] for p in read_records(sample / "train", "profiles")}
    held_out = {p["user_id"] for p in read_records(sample / "held-out", "profiles")}
    world_users = {p["user_id"] for p in read_records(small_world, "profiles")}
    assert trained_on and held_out and not trained_on & held_out and trained_on | held_out <= world_users
    assert len(trained_on) < len(world_users)  # a sample, not the whole world
    assert {e["user_id"] for e in read_records(sample / "train", "events")} <= trained_on

    # The printed figures are adcast eval's on the held-out users, with the best baseline beside them.
    quality = json.loads((model / DEMO_QUALITY_FILE).read_text())
    report = evaluate(sample / "held-out", model, ks=(10,), progress=False)
    assert quality["model"] == report["model"]["recall@10"]
    assert quality["targets"] == report["targets"] > 0
    assert quality["best_baseline_recall"] == max(b["recall@10"] for b in report["baselines"].values())
    assert f"recall@10 {quality['model']:.3f} against {quality['best_baseline_recall']:.3f}" in first
    assert "training the demo model" in first

    # A second run reuses the model and prints the same figures without training or scoring again.
    stamp = (model / META_FILE).stat().st_mtime_ns
    assert ensure_model(tmp_path, small_world) == model
    second = capsys.readouterr().out
    assert "using the cached demo model" in second and "training" not in second
    assert f"recall@10 {quality['model']:.3f}" in second
    assert (model / META_FILE).stat().st_mtime_ns == stamp
