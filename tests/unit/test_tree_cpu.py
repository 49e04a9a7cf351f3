"""tree_cpu_seconds: a worker's CPU includes its subprocesses (vLLM on the CPU can score in two)."""

import subprocess
import sys
import time

from adcast.bench._harness import tree_cpu_seconds

# The parent only waits; its child burns one CPU-second by its own clock, says so, then waits too.
CHILD = "import sys, time\nwhile time.process_time() < 1.0: pass\nopen(sys.argv[1], 'w').close()\ntime.sleep(600)\n"
PARENT = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
    "time.sleep(600)\n"
)


def test_the_cpu_of_a_waiting_parent_includes_its_busy_child(tmp_path):
    done = tmp_path / "burnt"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(done)])
    try:
        while not done.exists():  # the child's own event, however long the machine takes
            time.sleep(0.05)
        assert tree_cpu_seconds(parent.pid) >= 1.0  # the child's second; the parent alone spends ~0
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
    assert tree_cpu_seconds(parent.pid) == 0.0  # gone: nothing to read
