"""tree_cpu_seconds: a worker's CPU includes its subprocesses (vLLM on the CPU scores in two)."""

import subprocess
import sys
import time

from adcast.bench.e2e import tree_cpu_seconds

# The parent only waits; its child burns CPU until killed.
PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
    "time.sleep(60)\n"
)


def test_the_cpu_of_a_waiting_parent_includes_its_busy_child():
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        time.sleep(0.5)
        before = tree_cpu_seconds(parent.pid)
        time.sleep(1.5)
        busy = tree_cpu_seconds(parent.pid) - before
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
    assert busy > 0.5  # the child spun for 1.5 s; the parent alone would show ~0
    assert tree_cpu_seconds(parent.pid) == 0.0  # gone: nothing to read
