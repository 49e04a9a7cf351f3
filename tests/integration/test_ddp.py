"""Data-parallel training on PyTorch's own engine: `torchrun --nproc-per-node 2` on gloo (two CPU
processes) against one process with the same global batch and seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adcast.model_meta import META_FILE

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")
TRAIN = ["train", "--epochs", "2", "--batch-size", "16", "--global-batch", "64", "--checkpoint-every", "0", "--quiet"]


def _run(command: list[str], data: Path, out: Path) -> Path:
    # One thread per process: both runs then sum in the same order within a process.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*command, *TRAIN, "--data", str(data), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_two_ranks_train_as_one_process_with_the_same_global_batch(small_world, tmp_path):
    from safetensors.torch import load_file

    torchrun = str(Path(sys.executable).with_name("torchrun"))
    ddp = _run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "adcast.cli"], small_world, tmp_path / "ddp")
    one = _run([sys.executable, "-m", "adcast.cli"], small_world, tmp_path / "one")

    facts = {name: json.loads((tmp_path / name / META_FILE).read_text())["trained"] for name in ("ddp", "one")}
    assert facts["ddp"]["ranks"] == 2 and facts["one"]["ranks"] == 1
    assert facts["ddp"]["global_batch"] == facts["one"]["global_batch"] == 64
    # The ranks ended with identical weights, or the run would have failed (check_same_weights).
    assert facts["ddp"]["last_loss"] < 0.8 * facts["ddp"]["first_loss"]
    # The same examples make every step; only the order of float sums differs (the all-reduce adds
    # the two ranks' halves, one process its four micro-batches in turn), and Adam carries such
    # differences forward. Measured over this run's ~40 steps: weights within 2e-7 of each other
    # (at most 1.0 in size); the bounds leave two orders of magnitude for other CPUs' kernels.
    assert abs(facts["ddp"]["last_loss"] - facts["one"]["last_loss"]) < 1e-5 * facts["one"]["last_loss"]
    a, b = load_file(ddp / "model.safetensors"), load_file(one / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=2e-5), (name, (a[name] - b[name]).abs().max().item())
