#!/usr/bin/env bash
# An auditor's session against a Docket audit log, as README.md "The audit log" shows it.
#
#   examples/auditor/session.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR is the directory `docket serve` (`make run`) keeps its state in (default
# ./docket-data); OUT_DIR (default ./audit-session) receives the key, checkpoints,
# receipt, export and report. Every step exits non-zero if its check fails; the last
# tampers with a copy of the log and shows verify, report and export each catching it.
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
python=${PYTHON:-python3}
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
