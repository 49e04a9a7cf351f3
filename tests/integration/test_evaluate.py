import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("torch")


def test_eval_json_has_the_documented_shape_and_the_model_beats_popularity(small_world, tiny_model, tmp_path):
    plot = tmp_path / "recall.png"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "adcast.cli",
            "eval",
            "--data",
            str(small_world),
            "--model",
            str(tiny_model),
            "--k",
            "1,5,10",
            "--json",
            "--plot",
            str(plot),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["targets"] > 50
    assert set(report["baselines"]) == {"popularity", "recent", "recent_shown", "cooccurrence"}
    for values in [report["model"], *report["baselines"].values()]:
        assert set(values) == {"recall@1", "recall@5", "recall@10", "ndcg@10", "mrr"}
        assert values["recall@1"] <= values["recall@5"] <= values["recall@10"] <= 1
    assert report["model"]["recall@10"] > report["baselines"]["popularity"]["recall@10"]
    assert report["union"]["best_baseline@10"] in report["baselines"]
    # The breakdown by kind of target partitions the targets: per-kind recalls, weighted by their
    # counts, give back each method's overall recall@10.
    by_kind = report["by_kind"]
    assert set(by_kind) <= {"repeat", "return", "new"}
    assert sum(row["targets"] for row in by_kind.values()) == report["targets"]
    for method, overall in [("model", report["model"]), *report["baselines"].items()]:
        weighted = sum(row["targets"] * row[method]["recall@10"] for row in by_kind.values()) / report["targets"]
        assert weighted == pytest.approx(overall["recall@10"])
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_online_eval_reports_the_three_policies_side_by_side(small_world, tiny_model, tmp_path):
    plot = tmp_path / "budget.png"
    args = ["eval", "--online", "--data", str(small_world), "--model", str(tiny_model), "--k", "5,10"]
    args += ["--shown-intervals", "0,60000", "--json"]
    out = subprocess.run(
        [sys.executable, "-m", "adcast.cli", *args, "--plot", str(plot)], capture_output=True, text=True, check=True
    )
    report = json.loads(out.stdout)
    assert report["serving_delay_ms"] == 1000
    policies = report["policies"]
    assert list(policies) == ["value", "engagements", "every_change", "value@0ms", "value@60000ms"]
    every = policies["every_change"]
    for name, f in policies.items():
        # The same engagements are judged under every policy; the counts add up.
        assert f["targets"] == every["targets"] > 50 and f["events"] == every["events"]
        assert f["hit@10"] == f["recall@10"] and f["recall@5"] <= f["recall@10"]
        assert sum(f["calls_by_reason"].values()) == f["calls"]
        assert f["calls_per_event"] == pytest.approx(f["calls"] / f["events"])
        assert sum(row["targets"] for row in f["by_kind"].values()) == f["targets"]
        weighted = sum(row["targets"] * row["hit@10"] for row in f["by_kind"].values()) / f["targets"]
        assert weighted == pytest.approx(f["hit@10"])
        assert 0 <= f["no_prediction_share"] < 1 and 0 <= f["top10_drift_mean"] <= 1
        assert f["calls"] <= every["calls"], name  # a budget never calls more than every change
    assert set(every["calls_by_reason"]) == {"change"}
    # Holding ads shown alone longer gathers them into fewer calls.
    shown = {name: policies[name]["calls_by_reason"].get("shown", 0) for name in ("value@0ms", "value@60000ms")}
    assert shown["value@60000ms"] < shown["value@0ms"], shown
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"
    table = subprocess.run(
        [sys.executable, "-m", "adcast.cli", *args[:-1]], capture_output=True, text=True, check=True
    ).stdout
    assert all(name in table for name in policies) and "calls/event" in table
