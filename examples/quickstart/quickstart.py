"""Docket in five steps, on the default bundle in policies/.

Run it with `make run` (or `.venv/bin/python examples/quickstart/quickstart.py`).
The same requests work from the shell:

    docket decide --json < examples/quickstart/allow.json
    docket place < examples/quickstart/workload.json
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from engine import BundleError, Engine, PolicyBundle, Request, Workload

HERE = Path(__file__).resolve().parent
BUNDLE = HERE.parents[1] / "policies"


def main() -> int:
    now = datetime.now(UTC)
    print(f"1. Loading the policy bundle {BUNDLE}")
    try:
        bundle = PolicyBundle.load(BUNDLE)
    except BundleError as exc:
        for problem in exc.problems:
            print(f"   {problem}")
        return 1
    print(f"   {len(bundle.policies)} policies, {len(bundle.sites)} sites, {bundle.version}")
    engine = Engine(bundle)

    for step, name in ((2, "allow.json"), (3, "deny.json")):
        document = json.loads((HERE / name).read_text())
        request = Request.model_validate(document)
        decision = engine.decide(request, now=now)
        where = document["context"]["jurisdiction"]
        print(f"{step}. Alice reads EU patient records from '{where}': {decision.decision.upper()}")
        print(f"   determining policies: {', '.join(decision.reasons) or '(none)'}")

    document = json.loads((HERE / "workload.json").read_text())
    workload = Workload.model_validate(document["workload"])
    placement = engine.place(workload, now=now)
    print(f"4. Where may restricted workload '{workload.id}' (gpu-a100, eu/uk) run?")
    for rank, site in enumerate(placement.allowed, start=1):
        budget = "within" if site.within_latency_budget else "over"
        print(
            f"   #{rank} {site.site:<24} {site.latency_ms:>5g} ms ({budget} budget)"
            f"  ${site.cost_per_hour:.2f}/h"
        )
    print(
        f"   {len(placement.denied)} sites denied, e.g. {placement.denied[0].site}: "
        f"{', '.join(placement.denied[0].reasons)}"
    )

    print(
        "5. Next: `docket policy test` runs the bundle's test cases;"
        " `docket decide --help` for more."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
