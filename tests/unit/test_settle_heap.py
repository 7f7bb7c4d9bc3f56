"""How ``imprint serve`` sets the garbage collector before it serves (settle_heap)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import gc, json
from imprint.server import settle_heap

passes = []
gc.callbacks.append(lambda phase, info: phase == "start" and passes.append(info["generation"]))

def in_flight():
    # What 16 requests in flight hold at once: a few thousand young containers.
    return [{"n": i, "l": [i]} for i in range(2_000)]

def cycles(count):
    for _ in range(count):
        a = {}
        a["self"] = a  # freed only by a collection

result = {}
for label in ("python's default", "settled"):
    if label == "settled":
        settle_heap()
    gc.collect()
    passes.clear()
    for _ in range(50):
        held = in_flight()
        del held
    result[label] = len(passes)
    passes.clear()
    cycles(30_000)
    result[label + ", garbage"] = len(passes)
    result[label + ", uncollected"] = gc.collect()
print(json.dumps(result))
"""


def test_requests_in_flight_are_not_walked_but_garbage_is_collected() -> None:
    """Python's default collects the young generation whenever 700 containers are
    allocated and not freed, which requests in flight reach together every few calls:
    each pass walks objects still in use. Once settled, those allocations start no pass,
    while cyclic garbage still does and is freed."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    passes = json.loads(done.stdout)
    assert passes["python's default"] >= 50  # at least one pass for each burst
    assert passes["settled"] == 0
    assert passes["settled, garbage"] >= 1  # garbage still starts passes
    # They freed it: of the 30,000 cycles, at most a young generation's worth (10,000)
    # was still waiting for the next pass.
    assert passes["settled, uncollected"] < 15_000
