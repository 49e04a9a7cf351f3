"""tools/mixture_ceiling.py: mixtures of a user's own advertisers and popularity, scored on the
targets `adcast eval` uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from adcast.data.files import write_records
from adcast.data.synthetic import WorldSpec, generate
from adcast.evaluate import evaluate

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "mixture_ceiling.py"


def test_no_own_weight_is_the_popularity_baseline_and_the_best_is_the_highest(tmp_path: Path):
    world = generate(WorldSpec(users=150, seed=3))
    for kind in ("events", "advertisers", "profiles"):
        write_records(tmp_path, kind, world[kind])
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines()[2:-1]]
    recall = {(float(r[0]), r[1]): float(r[2]) for r in rows}
    popularity = evaluate(tmp_path, None, progress=False)["baselines"]["popularity"]["recall@10"]
    assert all(abs(r - popularity) < 5e-4 for (w, _), r in recall.items() if w == 0.0)
    best = float(out.stdout.splitlines()[-1].split()[3])
    assert best == max(recall.values()) > popularity  # the synthetic users come back to their advertisers
