"""The core must not import I/O libraries: both tiers' environments import it."""

import subprocess
import sys

BLOCKED = ["faust", "aiokafka", "confluent_kafka", "redis", "torch", "vllm", "transformers", "fastavro"]
CORE = [
    "adcast.core.events",
    "adcast.core.history",
    "adcast.core.triggers",
    "adcast.core.prompt",
    "adcast.core.batching",
    "adcast.core.requests",
    "adcast.core.examples",
    "adcast.core.affinities",
    "adcast.errors",
]

SCRIPT = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('core imported ' + name)
sys.meta_path.insert(0, Block())
for m in {CORE!r}:
    __import__(m)
print('ok')
"""


def test_core_imports_with_io_libraries_blocked():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
