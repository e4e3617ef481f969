"""A decide loop for :mod:`benchmarks.bench_compare`, run as a script under one tree's code.

``python benchmarks/_decide_worker.py BUNDLE`` with ``PYTHONPATH`` naming the tree whose
``engine`` is measured (this file imports nothing of the project by path, so the same
script serves the base revision and this tree). It loads BUNDLE, takes the request of
every case in ``BUNDLE/tests/*.yaml`` that the engine accepts, warms up, prints
``ready <requests>``, then for each line ``go N`` on standard input decides N requests
(cycled) and prints the wall-clock nanoseconds they took. End of input ends it.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from engine import Engine, PolicyBundle, Request, RequestError

WARM_UP_SECONDS = 1.5


def main() -> int:
    bundle_dir = Path(sys.argv[1])
    bundle = PolicyBundle.load(bundle_dir)
    try:  # the cases repeat: without this, a tree with a decision memo would time its hits
        engine = Engine(bundle, memo_entries=0)
    except TypeError:  # a base tree from before the memo
        engine = Engine(bundle)
    now = datetime.now(UTC)
    requests = []
    for path in sorted((bundle_dir / "tests").glob("*.y*ml")):
        for case in (yaml.safe_load(path.read_text()) or {}).get("cases", []):
            request = Request.model_validate(case["request"])
            try:
                engine.decide(request, now=now)
            except RequestError:
                continue
            requests.append(request)
    # Warm: merged policy slices are built in the background on first sight.
    deadline = time.monotonic() + WARM_UP_SECONDS
    while time.monotonic() < deadline:
        for request in requests:
            engine.decide(request, now=now)
    print(f"ready {len(requests)}", flush=True)
    position = 0
    for line in sys.stdin:
        count = int(line.split()[1])
        clock = time.perf_counter_ns
        started = clock()
        for _ in range(count):
            engine.decide(requests[position], now=now)
            position = (position + 1) % len(requests)
        print(clock() - started, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
