"""Call the sidecar example as two users: dave may read the employee directory, heidi
(public clearance only) may not. Start Docket and the app first (see README.md).

    .venv/bin/python examples/sidecar/call.py [http://127.0.0.1:8080]
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

CALLS = [
    ("dave", "/records/employee-directory"),  # allow: read-internal-within-clearance
    ("heidi", "/records/employee-directory"),  # deny: her clearance is public only
]


def call(base: str, user: str, path: str) -> tuple[int, str, dict[str, object]]:
    # The x-user header is the example's DEMO shortcut for identity; see README.md.
    request = urllib.request.Request(base + path, headers={"x-user": user})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as refused:
        status, headers, body = refused.code, refused.headers, refused.read()
    return status, headers.get("x-docket-decision-id", "-"), json.loads(body)


def main() -> int:
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    try:
        results = [(user, path, *call(base, user, path)) for user, path in CALLS]
    except urllib.error.URLError as exc:
        print(f"cannot reach the app at {base}: {exc.reason}; start it first (README.md)")
        return 2
    for user, path, status, decision_id, body in results:
        print(f"{user:>5} GET {path} -> {status}  decision {decision_id}")
        print(f"      {json.dumps(body)}")
    return 0 if [r[2] for r in results] == [200, 403] else 1


if __name__ == "__main__":
    sys.exit(main())
