#!/usr/bin/env bash
# An auditor's session against a Docket audit log, as README.md "The audit log" shows it.
#
#   examples/auditor/session.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR is the directory `docket serve` (`make run`) keeps its state in (default
# ./docket-data); OUT_DIR (default ./audit-session) receives the key, checkpoints,
# receipt, export and report. Every step exits non-zero if its check fails; the last
# ones tamper with copies of the log and show verify, report, export, verify-receipt
# and consistency each catching it.
set -euo pipefail

data=${1:-docket-data}
out=${2:-audit-session}
docket=${DOCKET:-docket}
command -v "$docket" >/dev/null || docket=.venv/bin/docket
mkdir -p "$out"

echo "# the verifier key, handed to the auditor once"
"$docket" audit key --data-dir "$data" | tee "$out/log.pub"
key=$(cat "$out/log.pub")

echo "# a signed checkpoint to keep"
"$docket" audit checkpoint --data-dir "$data" | tee "$out/checkpoint.txt"

echo "# the whole log, checked against the key and the kept checkpoint"
"$docket" audit verify --data-dir "$data" --key "$key" --checkpoint "$out/checkpoint.txt"

size=$(sed -n 2p "$out/checkpoint.txt")
last=$((size - 1))
echo "# a receipt for entry $last, checked with nothing but the key"
"$docket" audit prove "$last" --data-dir "$data" -o "$out/receipt.json"
"$docket" audit verify-receipt "$out/receipt.json" --key "$key"

echo "# the log only grew since the kept checkpoint"
"$docket" audit consistency "$out/checkpoint.txt" --data-dir "$data" --key "$key"

echo "# an export, verified offline"
"$docket" audit export --data-dir "$data" -o "$out/export.jsonl"
"$docket" audit verify --export "$out/export.jsonl" --key "$key"

echo "# the residency and compliance report"
"$docket" audit report --data-dir "$data" --key "$key" --format table
"$docket" audit report --data-dir "$data" --key "$key" --format html -o "$out/report.html"

echo "# a tampered period is caught: an entry's unhashed time column moved out of it"
# Docket's own Python (the attacker below rebuilds a log with Docket's code).
python=${PYTHON:-$(dirname "$(command -v "$docket")")/python}
mkdir -p "$out/tampered"
"$python" - "$data/docket.db" "$out/tampered/docket.db" <<'PY'
import sqlite3, sys
source, copy = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
source.backup(copy)
copy.execute("UPDATE audit_entry SET time = '1999-01-01T00:00:00.000000Z' WHERE idx = 0")
copy.commit()
PY
tampered=(--data-dir "$out/tampered")
for step in "verify --key $key" "report --key $key --format json" \
    "export -o $out/tampered/export.jsonl --since 2000-01-01"; do
    # shellcheck disable=SC2086  # each step is a command line of its own
    if "$docket" audit $step "${tampered[@]}" >/dev/null 2>"$out/tampered/stderr"; then
        echo "NOT caught: docket audit $step" >&2
        exit 1
    fi
    echo "caught by $step: $(cat "$out/tampered/stderr")"
done

echo "# an entry rewritten in place (its decision flipped) is caught by its receipt"
mkdir -p "$out/rewritten"
"$python" - "$data/docket.db" "$out/rewritten/docket.db" "$last" <<'PY'
import json, sqlite3, sys
source, copy = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
source.backup(copy)
(payload,) = copy.execute("SELECT payload FROM audit_entry WHERE idx = ?", (int(sys.argv[3]),)).fetchone()
entry = json.loads(payload)
entry["decision"] = "deny" if entry.get("decision") == "allow" else "allow"
copy.execute("UPDATE audit_entry SET payload = ? WHERE idx = ?",
             (json.dumps(entry, separators=(",", ":"), sort_keys=True).encode(), int(sys.argv[3])))
copy.commit()
PY
"$docket" audit prove "$last" --data-dir "$out/rewritten" -o "$out/rewritten/receipt.json"
if "$docket" audit verify-receipt "$out/rewritten/receipt.json" --key "$key" \
    >/dev/null 2>"$out/rewritten/stderr"; then
    echo "NOT caught: docket audit verify-receipt" >&2
    exit 1
fi
echo "caught by verify-receipt: $(cat "$out/rewritten/stderr")"

echo "# history rewritten with every hash recomputed and re-signed with a stolen key: caught"
echo "# by consistency with the checkpoint the auditor kept"
mkdir -p "$out/forged"
cp -r "$data/audit-keys" "$out/forged/audit-keys"
"$python" - "$data/docket.db" "$out/forged/docket.db" <<'PY'
import json, sqlite3, sys
from audit._canonical import canonical_json
from audit._store import Pending, Store
source = sqlite3.connect(sys.argv[1])
meta = dict(source.execute("SELECT key, value FROM audit_meta"))
rows = source.execute("SELECT idx, kind, time, payload FROM audit_entry ORDER BY idx").fetchall()
forged = Store(f"sqlite:///{sys.argv[2]}")
for name, value in meta.items():
    forged.set_meta(name, value)
pending = []
for idx, kind, time, payload in rows:
    if idx == 0:  # the first entry says something else now
        entry = json.loads(payload)
        entry["caller"] = "someone-else"
        payload = canonical_json(entry)
    pending.append(Pending(kind, time, payload))
forged.append(pending)
forged.close()
PY
"$docket" audit checkpoint --data-dir "$out/forged" >/dev/null
if "$docket" audit consistency "$out/checkpoint.txt" --data-dir "$out/forged" --key "$key" \
    >/dev/null 2>"$out/forged/stderr"; then
    echo "NOT caught: docket audit consistency" >&2
    exit 1
fi
echo "caught by consistency: $(cat "$out/forged/stderr")"
