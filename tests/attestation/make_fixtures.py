"""Regenerate tests/attestation/fixtures/ from a real software TPM (swtpm + tpm2-tools).

    .venv/bin/python tests/attestation/make_fixtures.py

Starts ``swtpm socket`` on a free TCP port pair in a temporary directory, creates an RSA
EK, an ECC (ECDSA/SHA-256) AK and an RSA (RSASSA/SHA-256) AK, extends PCRs 0 and 7 of the
SHA-256 bank, quotes PCRs 0-7 with each AK over a fixed nonce, reads the PCR values, and
writes the outputs into ``fixtures/``. The swtpm process is stopped by its PID and the
temporary directory removed. The keys differ on every run; the tests only rely on the files
being consistent with each other.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for swtpm.py
from swtpm import SoftwareTpm

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NONCE = bytes.fromhex("d0c4e7000000000000000000000000000000000000000000000000000000beef")
PCRS = list(range(8))
SELECTION = "sha256:" + ",".join(str(i) for i in PCRS)
EXTENDS = {
    0: "00" * 31 + "01",
    7: "a5" * 32,
}


def main() -> int:
    for tool in ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_pcrread"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install swtpm and tpm2-tools", file=sys.stderr)
            return 1
    tmp = Path(tempfile.mkdtemp(prefix="docket-swtpm-"))
    state = tmp / "state"
    state.mkdir()
    work = tmp / "work"
    work.mkdir()
    tpm = SoftwareTpm.start(state)
    try:

        def run(*argv: str) -> None:
            print("+", " ".join(argv))
            tpm.run(*argv, cwd=work)

        run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        for kind, alg, scheme in (("ecc", "ecc", "ecdsa"), ("rsa", "rsa", "rsassa")):
            run(
                "tpm2_createak",
                "-C", "ek.ctx",
                "-c", f"ak_{kind}.ctx",
                "-G", alg,
                "-g", "sha256",
                "-s", scheme,
                "-u", f"ak_{kind}.pub",
                "-n", f"ak_{kind}.name",
            )  # fmt: skip
        for index, digest in EXTENDS.items():
            run("tpm2_pcrextend", f"{index}:sha256={digest}")
        for kind in ("ecc", "rsa"):
            run(
                "tpm2_quote",
                "-c", f"ak_{kind}.ctx",
                "-l", SELECTION,
                "-q", NONCE.hex(),
                "-m", f"quote_{kind}.msg",
                "-s", f"quote_{kind}.sig",
                "-g", "sha256",
            )  # fmt: skip
        run("tpm2_pcrread", "-o", "pcrs.bin", SELECTION)

        pcr_bytes = (work / "pcrs.bin").read_bytes()
        values = {str(i): pcr_bytes[32 * n : 32 * (n + 1)].hex() for n, i in enumerate(PCRS)}
        if len(pcr_bytes) != 32 * len(PCRS):
            raise RuntimeError(f"pcrs.bin has {len(pcr_bytes)} bytes")

        FIXTURES.mkdir(exist_ok=True)
        names = [
            "ek.pub",
            "ak_ecc.pub",
            "ak_ecc.name",
            "ak_rsa.pub",
            "ak_rsa.name",
            "quote_ecc.msg",
            "quote_ecc.sig",
            "quote_rsa.msg",
            "quote_rsa.sig",
            "pcrs.bin",
        ]
        for name in names:
            shutil.copyfile(work / name, FIXTURES / name)
        meta = {
            "nonce": NONCE.hex(),
            "selection": {"sha256": PCRS},
            "extended": {str(k): v for k, v in EXTENDS.items()},
            "pcrs": {"sha256": values},
        }
        (FIXTURES / "quote.json").write_text(json.dumps(meta, indent=2) + "\n")
        (FIXTURES / "README.md").write_text(
            "Made by a real software TPM (swtpm 0.7.1, tpm2-tools 5.4) with\n"
            "`.venv/bin/python tests/attestation/make_fixtures.py`; see that script for the\n"
            "exact tpm2-tools commands. `*.pub` are TPM2B_PUBLIC, `*.name` TPM names,\n"
            "`quote_*.msg` TPMS_ATTEST, `quote_*.sig` TPMT_SIGNATURE, `pcrs.bin` the raw\n"
            "SHA-256 PCR 0-7 values from `tpm2_pcrread -o`, `quote.json` the nonce, the\n"
            "selection and the PCR values in hex.\n"
        )
        print(f"wrote {len(names) + 2} files into {FIXTURES}")
    finally:
        tpm.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
