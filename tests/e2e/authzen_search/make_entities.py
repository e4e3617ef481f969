"""Write ../authzen_search_bundle/entities.json from the interop scenario's users.json
and records.json (beside this file): ``python tests/e2e/authzen_search/make_entities.py``."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def entities() -> list[dict[str, object]]:
    """The scenario's users and records as Cedar entities (a record's owner a user)."""
    users = json.loads((HERE / "users.json").read_text())
    records = json.loads((HERE / "records.json").read_text())
    made: list[dict[str, object]] = [
        {
            "uid": {"type": "user", "id": user["id"]},
            "attrs": {"role": user["role"], "department": user["department"]},
            "parents": [],
        }
        for user in users
    ]
    made.extend(
        {
            "uid": {"type": "record", "id": str(record["id"])},
            "attrs": {
                "title": record["title"],
                "department": record["department"],
                "owner": {"__entity": {"type": "user", "id": record["owner"]}},
            },
            "parents": [],
        }
        for record in records
    )
    return made


if __name__ == "__main__":
    target = HERE.parent / "authzen_search_bundle" / "entities.json"
    target.write_text(json.dumps(entities(), indent=1) + "\n")
