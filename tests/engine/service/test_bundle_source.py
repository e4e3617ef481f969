"""Pulling bundles from their sources (issue 16): a real static HTTP server in the test and
a real OCI registry; each refusal keeps the last good bundle on disk."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bundle_servers import (
    OTHER_SIGNER,
    SIGNER,
    Registry,
    StaticServer,
    free_port,
    signed_archive,
    signed_files,
    start_registry,
)
from sample_bundle import bundle_files

from engine import PolicyBundle
from engine._core.models import Decision, PolicyError
from engine._errors import SourceError
from engine._service.bundle_revisions import RevisionGuard
from engine._service.bundle_source import (
    Freshness,
    Limits,
    OciSource,
    Puller,
    open_source,
    pack,
    publish,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = Limits(max_bytes=1024 * 1024, timeout=5.0)
FRESH = (
    '@id("wire")\n@fresh_policy("revocations must count")\npermit (principal, action, resource);\n'
)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server() -> Iterator[StaticServer]:
    served = StaticServer({"/bundle.tar.gz": signed_archive(1)})
    yield served
    served.stop()


def puller(tmp_path: Path, url: str, *, clock: Clock | None = None, **limits: float) -> Puller:
    return Puller(
        source=open_source(url),
        directory=tmp_path / "pulled",
        public_key=SIGNER.verifier(),
        guard=RevisionGuard(tmp_path, signed=True),
        limits=Limits(**{"max_bytes": LIMITS.max_bytes, "timeout": 5.0, **limits}),
        interval=30.0,
        clock=clock or Clock(),
    )


def held(pull: Puller) -> int | None:
    return PolicyBundle.load(pull.archive).revision if pull.archive.exists() else None


def test_a_new_bundle_is_pulled_verified_and_kept(tmp_path: Path, server: StaticServer) -> None:
    pull = puller(tmp_path, server.url())
    pulled = pull.pull()
    assert pulled.outcome == "new"
    assert held(pull) == 1
    state = pull.read_state()
    assert (state.revision, state.checked_at, state.pulled_at) == (1, NOW, NOW)


def test_an_unchanged_source_answers_304_and_costs_no_download(
    tmp_path: Path, server: StaticServer, clock: Clock
) -> None:
    pull = puller(tmp_path, server.url(), clock=clock)
    assert pull.pull().outcome == "new"
    sent = server.body_bytes
    clock.now = NOW + timedelta(minutes=5)
    assert pull.pull().outcome == "unchanged"
    assert server.answers[-1] == ("GET", 304)
    assert server.body_bytes == sent
    # The 304 confirms the bundle: its freshness moves on.
    assert pull.read_state().checked_at == clock.now
    assert pull.read_state().pulled_at == NOW


@pytest.mark.parametrize(
    ("first", "then", "reason", "problem"),
    [
        pytest.param(
            signed_archive(2),
            signed_archive(1),
            "RollbackError",
            "revision 1 of bundle 'acme' is older than revision 2",
            id="older-revision",
        ),
        pytest.param(
            signed_archive(1),
            signed_archive(2, signer=OTHER_SIGNER),
            "SignatureError",
            "not signed by the configured key",
            id="bad-signature",
        ),
        pytest.param(
            signed_archive(1),
            pack(
                {
                    **signed_files(2),
                    "10-access.cedar": b'@id("x")\npermit (principal, action, resource);\n',
                }
            ),
            "SignatureError",
            "signs another version",
            id="files-changed-after-signing",
        ),
        pytest.param(
            signed_archive(1),
            signed_archive(2)[:-40],
            "truncated",
            "truncated: the gzip stream stops before its end",
            id="truncated-archive",
        ),
        pytest.param(
            signed_archive(1),
            gzip.compress(b"not a tar archive at all"),
            "BundleError",
            "not a readable .tar.gz bundle",
            id="not-an-archive",
        ),
    ],
)
def test_a_refused_bundle_keeps_the_last_good_one(
    tmp_path: Path, server: StaticServer, first: bytes, then: bytes, reason: str, problem: str
) -> None:
    server.files["/bundle.tar.gz"] = first
    pull = puller(tmp_path, server.url())
    assert pull.pull().outcome == "new"
    before = pull.archive.read_bytes()
    good = pull.read_state()
    RevisionGuard(tmp_path, signed=True).admit(PolicyBundle.load(pull.archive), NOW)
    server.files["/bundle.tar.gz"] = then
    pulled = pull.pull()
    assert (pulled.outcome, pulled.reason) == ("refused", reason)
    assert problem in " ".join(pulled.problems)
    assert pull.archive.read_bytes() == before
    state = pull.read_state()
    assert (state.version, state.checked_at) == (good.version, good.checked_at)
    # The same refused bundle again: refused again, reported as a repeat (audited once).
    again = pull.pull()
    assert (again.outcome, again.repeated) == ("refused", True)


def test_a_body_cut_short_is_refused_as_truncated(tmp_path: Path, server: StaticServer) -> None:
    archive = signed_archive(1)
    server.files["/bundle.tar.gz"] = archive
    server.cut_after = len(archive) // 2
    pulled = puller(tmp_path, server.url()).pull()
    assert (pulled.outcome, pulled.reason) == ("refused", "truncated")
    assert f"of the {len(archive)} bytes announced arrived" in pulled.problems[0]


def test_an_announced_size_past_the_bound_is_refused_unread(
    tmp_path: Path, server: StaticServer
) -> None:
    archive = signed_archive(1, changes={"padding.bin": bytes(range(256)) * 400})
    server.files["/bundle.tar.gz"] = archive
    pull = puller(tmp_path, server.url(), max_bytes=len(archive) - 1)
    pulled = pull.pull()
    assert (pulled.outcome, pulled.reason) == ("refused", "too-big")
    assert f"the bundle is {len(archive)} bytes, past the bound" in pulled.problems[0]
    assert not pull.archive.exists()


def test_an_unannounced_size_is_cut_off_at_the_bound(tmp_path: Path, server: StaticServer) -> None:
    archive = signed_archive(1, changes={"padding.bin": bytes(range(256)) * 400})
    server.files["/bundle.tar.gz"] = archive
    server.no_length = True
    pulled = puller(tmp_path, server.url(), max_bytes=len(archive) // 2).pull()
    assert (pulled.outcome, pulled.reason) == ("refused", "too-big")
    assert "(cut off)" in pulled.problems[0]


def test_an_unreachable_source_is_an_outage_reported_once(tmp_path: Path) -> None:
    pull = puller(tmp_path, f"http://127.0.0.1:{free_port()}/bundle.tar.gz")
    first, second = pull.pull(), pull.pull()
    assert (first.outcome, first.reason, first.repeated) == ("unreachable", "unreachable", False)
    assert (second.outcome, second.repeated) == ("unreachable", True)
    assert "unreachable" in first.problems[0]
    assert pull.read_state().failing_since == NOW


def test_a_missing_bundle_is_refused_with_the_status(tmp_path: Path, server: StaticServer) -> None:
    pulled = puller(tmp_path, server.url("/nothing.tar.gz")).pull()
    assert (pulled.outcome, pulled.reason) == ("refused", "bad-answer")
    assert "GET answered 404" in pulled.problems[0]


def test_pulls_are_due_once_per_interval_across_processes(
    tmp_path: Path, server: StaticServer, clock: Clock
) -> None:
    pull = puller(tmp_path, server.url(), clock=clock)
    assert pull.due(NOW)
    pull.pull()
    # Another worker of the replica sees the pull just made in source.json.
    other = puller(tmp_path, server.url(), clock=clock)
    assert not other.due(NOW + timedelta(seconds=1))
    assert other.pull(only_if_due=True).outcome == "busy"
    assert other.due(NOW + timedelta(seconds=30))
    delays = {round(pull.next_delay(), 3) for _ in range(50)}
    assert all(27.0 <= delay <= 33.0 for delay in delays)
    assert len(delays) > 1


def test_push_then_pull_over_http(tmp_path: Path, server: StaticServer) -> None:
    bundle = PolicyBundle.from_files(signed_files(3))
    assert publish(bundle, server.url(), timeout=5) == server.url()
    pull = puller(tmp_path, server.url())
    assert pull.pull().outcome == "new"
    assert PolicyBundle.load(pull.archive, public_key=SIGNER.verifier()).version == bundle.version


def test_pack_is_the_same_bytes_for_the_same_files() -> None:
    assert pack(signed_files(1)) == pack(dict(reversed(signed_files(1).items())))


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("file:///etc/passwd", "a bundle URL is http://…, https://… or oci://"),
        ("oci://registry.example/Upper:tag", "not an OCI reference"),
        ("oci://registry.example", "not an OCI reference"),
    ],
)
def test_a_url_that_is_no_source_is_refused(url: str, problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        open_source(url)


@pytest.mark.parametrize(
    ("url", "base", "reference"),
    [
        ("oci://127.0.0.1:5000/acme/policies:v2", "http://127.0.0.1:5000/v2/acme/policies", "v2"),
        ("oci://localhost/acme", "http://localhost/v2/acme", "latest"),
        ("oci://ghcr.io/acme/policies:prod", "https://ghcr.io/v2/acme/policies", "prod"),
        (
            "oci://ghcr.io/acme@sha256:" + "0" * 64,
            "https://ghcr.io/v2/acme",
            "sha256:" + "0" * 64,
        ),
    ],
)
def test_oci_references(url: str, base: str, reference: str) -> None:
    source = OciSource.parse(url)
    assert (source.base, source.reference) == (base, reference)


# -- freshness --------------------------------------------------------------------------


def allow(*reasons: str) -> Decision:
    return Decision(decision="allow", reasons=reasons, evaluated_at=NOW)


FRESH_BUNDLE = PolicyBundle.from_files(bundle_files({"30-wire.cedar": FRESH}))


@pytest.mark.parametrize(
    ("age", "decision", "expected"),
    [
        pytest.param(59, allow("wire"), "allow", id="fresh-marked-permit-allows"),
        pytest.param(61, allow("wire"), "deny", id="stale-marked-permit-denies"),
        pytest.param(61, allow("wire", "read-own"), "allow", id="stale-unmarked-permit-too"),
        pytest.param(61, allow("read-own"), "allow", id="stale-unmarked-permit-allows"),
        pytest.param(None, allow("wire"), "deny", id="never-confirmed-is-stale"),
    ],
)
def test_a_stale_bundle_stops_what_needs_fresh_policy(
    age: int | None, decision: Decision, expected: str
) -> None:
    freshness = Freshness(max_staleness=60)
    freshness.confirmed_at = None if age is None else NOW - timedelta(seconds=age)
    (vetted,) = freshness.vet(FRESH_BUNDLE, [decision], NOW)
    assert vetted.decision == expected
    if expected == "deny":
        assert vetted.reasons == ()
        (error,) = vetted.errors
        assert isinstance(error, PolicyError)
        assert error.policy == "wire"
        assert "needs fresh policy (@fresh_policy), but the bundle is stale" in error.message
        assert "past max_bundle_staleness of 60 s" in error.message


def test_without_a_maximum_a_bundle_is_never_stale() -> None:
    freshness = Freshness(max_staleness=None)
    assert not freshness.stale(NOW)
    assert freshness.vet(FRESH_BUNDLE, [allow("wire")], NOW)[0].allowed


# -- OCI, against a real registry --------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    running = start_registry(tmp_path / "registry")
    yield running
    running.stop()


@pytest.mark.e2e
def test_oci_push_then_pull_checks_the_digest(tmp_path: Path, registry: Registry) -> None:
    reference = registry.reference()
    bundle = PolicyBundle.from_files(signed_files(1))
    pushed = publish(bundle, reference, timeout=10)
    assert pushed.startswith(f"oci://127.0.0.1:{registry.port}/acme/policies@sha256:")
    pull = puller(tmp_path, reference)
    assert pull.pull().outcome == "new"
    assert pull.read_state().tag == pushed.rpartition("@")[2]
    # Unchanged: the manifest's digest is the one held; no blob is downloaded.
    assert pull.pull().outcome == "unchanged"
    # The layer as the manifest names it, by digest: pulling by digest works too.
    by_digest = puller(tmp_path / "other", pushed)
    assert by_digest.pull().outcome == "new"
    asked = urllib.request.Request(
        f"http://127.0.0.1:{registry.port}/v2/acme/policies/manifests/latest",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(asked, timeout=5) as answer:
        manifest = json.loads(answer.read())
    assert manifest["artifactType"] == "application/vnd.docket.bundle.v1"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.docket.bundle.v1.tar+gzip"


@pytest.mark.e2e
def test_oci_older_revision_and_bad_signature_are_refused(
    tmp_path: Path, registry: Registry
) -> None:
    reference = registry.reference()
    publish(PolicyBundle.from_files(signed_files(2)), reference, timeout=10)
    pull = puller(tmp_path, reference)
    assert pull.pull().outcome == "new"
    RevisionGuard(tmp_path, signed=True).admit(PolicyBundle.load(pull.archive), NOW)
    publish(PolicyBundle.from_files(signed_files(1)), reference, timeout=10)
    assert pull.pull().reason == "RollbackError"
    publish(PolicyBundle.from_files(signed_files(3, signer=OTHER_SIGNER)), reference, timeout=10)
    assert pull.pull().reason == "SignatureError"
    assert held(pull) == 2


@pytest.mark.e2e
def test_oci_layer_past_the_bound_is_refused_before_download(
    tmp_path: Path, registry: Registry
) -> None:
    reference = registry.reference()
    big = signed_files(1, changes={"padding.bin": bytes(range(256)) * 400})
    publish(PolicyBundle.from_files(big), reference, timeout=10)
    pulled = puller(tmp_path, reference, max_bytes=len(pack(big)) - 1).pull()
    assert (pulled.outcome, pulled.reason) == ("refused", "too-big")


def test_a_redirect_to_another_scheme_is_refused(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/bundle.tar.gz")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        pulled = puller(tmp_path, f"http://127.0.0.1:{httpd.server_address[1]}/b").pull()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (pulled.outcome, pulled.reason) == ("refused", "bad-answer")
    assert "redirected to ftp://127.0.0.1/bundle.tar.gz, refused" in pulled.problems[0]


# -- long polling (OPA's ``Prefer: wait``) ----------------------------------------------


@pytest.mark.parametrize("supported", [True, False], ids=["server-long-polls", "server-does-not"])
def test_a_long_poll_waits_for_the_next_bundle(
    tmp_path: Path, server: StaticServer, clock: Clock, supported: bool
) -> None:
    server.long_poll = supported
    pull = puller(tmp_path, server.url(), clock=clock, long_poll=10)
    assert pull.pull().outcome == "new"  # nothing held yet: an ordinary GET
    # While the request waits (or before it, on a server that does not long-poll)...
    if supported:
        threading.Timer(0.2, server.put, ("/bundle.tar.gz", signed_archive(2))).start()
    else:
        server.put("/bundle.tar.gz", signed_archive(2))
    pulled = pull.pull()
    # ...the answer is the new bundle, with no 304 before it.
    assert (pulled.outcome, held(pull)) == ("new", 2)
    assert server.answers[-1] == ("GET", 200)
    assert pulled.long_polled is supported
    # Another worker of the replica may follow a long poll at once: it is always due.
    other = puller(tmp_path, server.url(), clock=clock, long_poll=10)
    assert other.due(clock.now) is supported


def test_a_long_poll_that_times_out_confirms_the_bundle(
    tmp_path: Path, server: StaticServer, clock: Clock
) -> None:
    server.long_poll = True
    pull = puller(tmp_path, server.url(), clock=clock, long_poll=1)
    assert pull.pull().outcome == "new"
    clock.now = NOW + timedelta(minutes=1)
    pulled = pull.pull()
    assert (pulled.outcome, pulled.long_polled) == ("unchanged", True)
    assert server.answers[-1] == ("GET", 304)
    assert pull.read_state().checked_at == clock.now


def test_a_refused_bundle_ends_the_long_polls_until_the_interval(
    tmp_path: Path, server: StaticServer, clock: Clock
) -> None:
    """Long polling past a refused bundle would download it again at once, forever: the
    replica goes back to its interval."""
    server.long_poll = True
    pull = puller(tmp_path, server.url(), clock=clock, long_poll=10)
    assert pull.pull().outcome == "new"
    server.put("/bundle.tar.gz", signed_archive(2, signer=OTHER_SIGNER))
    pulled = pull.pull()
    assert (pulled.outcome, pulled.long_polled) == ("refused", True)
    assert not pull.long_polling()
    assert not pull.due(clock.now)
