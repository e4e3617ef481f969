"""``docket policy``: validate, test and sign policy bundles, make signing keys, and derive
a measured-boot device class from known-good boot event logs (``derive-boot``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from audit.cli import CheckFailed, InputError, data_dir_option, db_option
from engine._errors import BundleError, SignatureError
from engine.cli.common import key_option, load_bundle, public_key, settings_of


@click.group()
def policy() -> None:
    """Validate, test and sign policy bundles."""


@policy.command()
@click.argument("bundle_dir", required=False, type=click.Path(path_type=Path))
@key_option
@click.pass_context
def validate(ctx: click.Context, bundle_dir: Path | None, bundle_key: Path | None) -> None:
    """Check a bundle: parse, validate strictly against its schema, load entities and
    sites. Prints every problem as FILE:LINE: MESSAGE and exits 1 if there is any; a
    bundle that is not there is an input error (exit 2), as for every command."""
    from engine._core.bundle import PolicyBundle

    settings = settings_of(ctx)
    path = bundle_dir or settings.bundle
    key = bundle_key or settings.bundle_public_key
    verifying_key = public_key(key)
    if not Path(path).exists():
        load_bundle(path, key)  # the one message every command gives, exit 2
    try:
        bundle = PolicyBundle.load(path, public_key=verifying_key)
    except BundleError as exc:
        for problem in exc.problems:
            click.echo(problem)
        raise CheckFailed(
            f"{path}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}"
        ) from exc
    signed = f", signed by {bundle.signed_by}" if bundle.signed_by else ""
    click.echo(
        f"{path}: ok — {len(bundle.policies)} policies, {len(bundle.sites)} sites, "
        f"version {bundle.version}{signed}"
    )


@policy.command(name="test")
@click.argument("bundle_dir", required=False, type=click.Path(path_type=Path))
@click.option("--junit", type=click.Path(path_type=Path), help="Also write JUnit XML here.")
@click.option("-v", "--verbose", is_flag=True, help="List every case, passed ones too.")
@key_option
@click.pass_context
def test_cmd(
    ctx: click.Context,
    bundle_dir: Path | None,
    junit: Path | None,
    verbose: bool,
    bundle_key: Path | None,
) -> None:
    """Run the bundle's tests/*.yaml cases: list the failures, the policies that no case
    exercises and a summary (--verbose: every case, in a table)."""
    from rich.table import Table

    from engine._core.policy_tests import junit_xml, load_cases, run_cases, uncovered_policies
    from engine.cli.common import out

    settings = settings_of(ctx)
    path = bundle_dir or settings.bundle
    bundle = load_bundle(path, bundle_key or settings.bundle_public_key)
    try:
        cases = load_cases(bundle.files)
    except BundleError as exc:
        for problem in exc.problems:
            click.echo(problem)
        raise InputError(f"{path}: test cases are malformed") from exc
    if not cases:
        raise InputError(f"{path}: no test cases under tests/*.yaml")
    results = run_cases(bundle, cases, now=datetime.now(UTC))
    if verbose:
        table = Table(title=f"policy tests — {path} ({bundle.version[:19]})")
        table.add_column("case")
        table.add_column("file", style="dim")
        table.add_column("expected")
        table.add_column("got")
        table.add_column("result")
        for result in results:
            expected = result.loaded.case.expect.decision
            table.add_row(
                result.loaded.case.name,
                f"{result.loaded.file}:{result.loaded.line}",
                expected,
                result.decision or "error",
                "[green]pass[/]" if result.passed else "[red]FAIL[/]",
            )
        out.print(table)
    failed = [r for r in results if not r.passed]
    for result in failed:
        out.print(
            f"[red]FAIL[/] {result.loaded.file}:{result.loaded.line} {result.loaded.case.name}"
        )
        for failure in result.failures:
            out.print(f"    {failure}", markup=False)
    uncovered = uncovered_policies(bundle, results)
    if uncovered:
        out.print(f"policies no case exercises ({len(uncovered)}):", markup=False)
        for policy_id in uncovered:
            out.print(f"    {policy_id} ({bundle.policy(policy_id).where})", markup=False)
    else:
        out.print(f"every policy determines at least one case ({len(bundle.policies)} policies)")
    if junit is not None:
        junit.write_text(junit_xml(results, bundle_version=bundle.version))
    out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed", markup=False)
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(results)} policy tests failed")


@policy.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option(
    "--key",
    required=True,
    type=click.Path(path_type=Path),
    help="The signing key (PREFIX.key from `docket policy keygen`).",
)
def sign(bundle_dir: Path, key: Path) -> None:
    """Sign a bundle directory: writes BUNDLE_DIR/bundle.sig, a C2SP signed note over its
    version, name and revision."""
    from engine._core.signing import SIGNATURE_FILE, load_signer, sign_bundle

    if not bundle_dir.is_dir():
        raise InputError(f"{bundle_dir}: not a directory (sign the directory, then archive it)")
    try:
        signer = load_signer(key)
    except SignatureError as exc:
        raise InputError(str(exc)) from exc
    bundle = load_bundle(bundle_dir, None)
    if bundle.name is None or bundle.revision is None:
        raise InputError(
            f"{bundle_dir / 'bundle.toml'}: a signed bundle needs [bundle] name and revision "
            "(raise the revision with every release: replicas refuse a lower one)"
        )
    note = sign_bundle(bundle.version, signer, name=bundle.name, revision=bundle.revision)
    (bundle_dir / SIGNATURE_FILE).write_text(note)
    click.echo(
        f"signed {bundle.name} revision {bundle.revision} ({bundle.version}) with key "
        f"{signer.name}+{signer.key_id.hex()} → {bundle_dir / SIGNATURE_FILE}"
    )


@policy.command()
@click.option(
    "--out",
    "prefix",
    default=None,
    help="Write PREFIX.key (private, mode 0600) and PREFIX.pub [<data-dir>/keys/docket-bundle:"
    " never the working directory, where `git add .` would take the key].",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.pass_context
def keygen(ctx: click.Context, prefix: str | None, force: bool) -> None:
    """Make a key pair for signing bundles: PREFIX.key (the signer, a C2SP note key, mode
    0600) and PREFIX.pub (its verifier key, for `bundle_public_key` / --bundle-key)."""
    from engine._core.signing import write_keypair

    if prefix is None:
        directory = settings_of(ctx).data_dir / "keys"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        prefix = str(directory / "docket-bundle")
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists():
            if not force:
                raise InputError(f"{path} exists; use --force to overwrite it")
            path.unlink()
    try:
        write_keypair(Path(prefix))
    except OSError as exc:
        raise InputError(f"cannot write {prefix}.key: {exc.strerror}") from exc
    click.echo(f"private key: {private_path} (keep it secret)\npublic key:  {public_path}")


@policy.command(name="derive-boot")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--class", "class_name", default="measured", help="The class name [measured].")
@click.option(
    "--write",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="After showing it, write the class to this file (reference/<class>.toml), once confirmed.",
)
@click.option("--yes", is_flag=True, help="Write without asking (with --write).")
@click.option(
    "--bank",
    type=click.Choice(["sha256", "sha384", "sha512", "sha1"]),
    default="sha256",
    show_default=True,
    help="The PCR bank the logs must replay to.",
)
def derive_boot(
    logs: tuple[Path, ...], class_name: str, bank: str, target: Path | None, yes: bool
) -> None:
    """Propose a measured-boot device class from known-good boot event logs
    (binary_bios_measurements of machines you trust), as Keylime's create_mb_refstate does:
    the PK/KEK/db/dbx digests, each boot stage's digests, the firmware versions seen. The
    class admits exactly what the logs show: review it, then --write it into the bundle's
    reference/ (nothing is written without --write)."""
    from attestation import (
        AttestationError,
        boot_class_toml,
        derive_boot_policy,
        parse_event_log,
        parse_reference,
    )

    parsed = []
    for path in logs:
        try:
            parsed.append(parse_event_log(path.read_bytes()))
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        except AttestationError as exc:
            raise InputError(f"{path}: {exc}") from exc
    try:
        derived = derive_boot_policy(parsed, bank)
        text = boot_class_toml(derived, class_name)
        parse_reference({f"{class_name}.toml": text.encode()})  # what `serve` will read
    except AttestationError as exc:
        raise InputError(str(exc)) from exc
    click.echo(text, nl=False)
    proposal = derived.policy
    secure = "on in every one" if derived.secure_boot else "off in at least one"
    summary = [f"# {derived.logs} logs, Secure Boot {secure}"]
    for name in ("pk", "kek", "db", "dbx"):
        found = getattr(proposal, name)
        plural = "s" if len(found) != 1 else ""
        summary.append(f"#   {name}: {len(found)} digest{plural}")
    for number, stage in enumerate(proposal.boot, start=1):
        count = len(stage.digests)
        plural = "s" if count != 1 else ""
        summary.append(f"#   boot stage {number} ({stage.name}): {count} digest{plural}")
    summary.append(f"#   firmware versions: {', '.join(proposal.crtm_versions) or 'none'}")
    if proposal.allowed_actions:
        summary.append(f"#   non-standard actions allowed: {len(proposal.allowed_actions)}")
    click.echo("\n".join(summary))
    if target is None:
        return
    verb = "Replace" if target.exists() else "Write"
    if not yes and not click.confirm(f"{verb} {target} with this class?", default=False):
        raise CheckFailed(f"{target}: not written")
    try:
        target.write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror}") from exc
    click.echo(f"wrote {target}")


@policy.command(name="shadow-report")
@click.option(
    "--data-dir", type=click.Path(path_type=Path), help="State directory [./docket-data]."
)
@click.option(
    "--db", "db_url", metavar="URL", help="Audit database [sqlite:///<data-dir>/docket.db]."
)
@click.option("--since", help="First decision time (ISO 8601, UTC if no offset).")
@click.option("--until", help="End time, exclusive (ISO 8601).")
@click.option(
    "--candidate",
    metavar="VERSION",
    help="The shadow bundle to report on (a prefix of its sha256:… version) [the last one used].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for a terminal, json for tools.",
)
@click.pass_context
def shadow_report(
    ctx: click.Context,
    data_dir: Path | None,
    db_url: str | None,
    since: str | None,
    until: str | None,
    candidate: str | None,
    fmt: str,
) -> None:
    """Report how a shadow bundle (`docket serve --shadow-bundle`) disagreed with the
    live one, from the audit log: decisions made with it, disagreements by kind
    (flip_allow_to_deny, flip_deny_to_allow, error) and by policy, examples. Exits 0
    when clean (no disagreement over at least one decision made with it), else 1."""
    import json

    from audit import AuditError, AuditLog, Entry
    from audit.cli import parse_period
    from engine._service.shadow_report import render_text, shadow_reports

    settings = settings_of(ctx).with_flags(data_dir=data_dir, db_url=db_url)
    start, end = parse_period(since, until)
    try:
        log = AuditLog.open(settings.database_url, keys=None, create=False)
    except AuditError as exc:
        raise InputError(f"audit log {settings.database_url}: {exc}") from exc
    try:
        entries = (
            Entry.from_canonical(row.payload)
            for row in log.store.entries()
            if row.payload is not None  # an erased (redacted) payload says nothing
        )
        reports = shadow_reports(entries, since=start, until=end)
    finally:
        log.store.close()
    chosen = [r for r in reports if candidate is None or r.version.startswith(candidate)]
    if not chosen:
        which = f"shadow bundle {candidate}" if candidate else "shadow bundle"
        raise CheckFailed(f"no {which} in the audit log {settings.database_url}")
    report = chosen[-1]
    if fmt == "json":
        click.echo(json.dumps(report.document(), indent=2))
    else:
        click.echo(render_text(report))
    if not report.clean:
        raise CheckFailed(
            f"shadow bundle {report.version[:19]}: {report.disagreements:,} disagreements over "
            f"{report.decisions:,} decisions"
            if report.decisions or report.disagreements
            else f"shadow bundle {report.version[:19]}: no decision was made with it"
        )


@policy.command()
@click.argument("candidate", type=click.Path(path_type=Path))
@key_option
@data_dir_option
@db_option
@click.option("--since", help="Replay entries from this time on (ISO 8601, UTC if no zone).")
@click.option("--until", help="Replay entries before this time (exclusive).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    show_default=True,
    help="text for a terminal, json for tools, html for a browser (one self-contained page).",
)
@click.option("--out", type=click.Path(path_type=Path), help="Write the report here, not stdout.")
@click.option(
    "--examples",
    type=click.IntRange(0, 1000),
    default=5,
    show_default=True,
    help="Examples kept per group.",
)
@click.option(
    "--live",
    type=click.Path(path_type=Path),
    help="The live bundle to compare the candidate with statically [the one this replica "
    "serves: bundle, or with bundle_url the last good one pulled].",
)
@click.pass_context
def diff(
    ctx: click.Context,
    candidate: Path,
    bundle_key: Path | None,
    live: Path | None,
    data_dir: Path | None,
    db: str | None,
    since: str | None,
    until: str | None,
    fmt: str,
    out: Path | None,
    examples: int,
) -> None:
    """Replay the requests recorded beside the audit log (`record_requests`) against the
    CANDIDATE bundle and report every decision that would flip (allow→deny, deny→allow),
    grouped by determining policy and by principal/resource type, and every placement
    whose ranking would change or that would lose a site. The candidate must verify like
    any bundle (--bundle-key). The report also compares the candidate with the live
    bundle itself (--live): policies added, removed and changed, schema, and policy tests
    whose outcome changes. Exit 0: no recorded decision would change; 1: some would (or a
    recorded request could not be replayed); 2: an error."""
    import json

    from audit import AuditError, RequestKeys, Store
    from audit.cli import parse_period, progress_bar
    from engine._core.bundle_compare import compare_bundles
    from engine._core.evaluate import Engine
    from engine._runtime.prepare import bundle_path
    from engine._service.impact import build_report, to_html, to_json, to_text
    from engine._service.replay import Progress, replay

    settings = settings_of(ctx).with_flags(data_dir=data_dir, db_url=db)
    key = bundle_key or settings.bundle_public_key
    bundle = load_bundle(candidate, key)
    start, end = parse_period(since, until)
    if live is None and not bundle_path(settings).exists():
        click.echo(f"no live bundle at {bundle_path(settings)}: no static comparison", err=True)
        static = None
    else:
        live_bundle = load_bundle(live or bundle_path(settings), key)
        static = compare_bundles(live_bundle, bundle, now=datetime.now(UTC))
    try:
        store = Store(settings.database_url, create=False)
    except AuditError as exc:
        raise InputError(f"audit log: {exc}") from exc
    keys = RequestKeys.in_dir(settings.data_dir)
    try:
        with progress_bar("replaying", store.extent()[2]) as bar:

            def shown(state: Progress) -> None:
                bar(state.read)

            report = build_report(
                replay(store, keys, Engine(bundle), since=start, until=end, progress=shown),
                candidate=f"{candidate} ({bundle.version[:19]})",
                since=since,
                until=until,
                examples=examples,
            )
    except AuditError as exc:
        raise InputError(f"cannot replay: {exc}") from exc
    finally:
        store.close()
    report.static = static
    if fmt == "json":
        text = json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n"
    else:
        text = to_html(report) if fmt == "html" else to_text(report)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
    click.echo(
        f"replayed {report.replayed}: {report.flipped} flips, {report.reranked.count} "
        f"reranked, {len(report.lost_sites)} sites lost, {len(report.problems)} not replayed",
        err=True,
    )
    if report.problems:
        raise CheckFailed(f"{len(report.problems)} recorded requests could not be replayed")
    if report.changed:
        raise CheckFailed(f"{report.flipped} decisions would flip under {candidate}")
