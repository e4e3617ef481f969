"""Peer comparison: Cerbos ``CheckResources`` against Docket ``Authorize`` on one
equivalent decision, and against ``BatchAuthorize`` on batches of the same decisions
(10 and 100 resources per call); same load tool, connections and duration.

Cerbos comes from npm (``cerbos``, which ships the binary as
``@cerbos/cerbos-<os>-<arch>``), installed on first use into ``benchmarks/.out/``.
``benchmarks/cerbos/policies`` holds Docket's data-access policies (access.cedar and
guards.cedar) as a Cerbos resource policy with derived roles. Cerbos is stateless: what
Docket reads from its entity store (department, clearance, owner, residency...) is sent
in the Cerbos request as principal and resource attributes, and the request context
(MFA, jurisdiction, device posture) as the principal attribute ``session``. Both keep an
audit log: Docket's durable before each answer, Cerbos's asynchronous.

Before any load, every case of ``policies/tests/access.yaml`` on Data without inline
entities is asked of both servers (of Docket as a caller sends it: an attested device's
posture in a device token), and each must answer as the case expects; the table of
both is printed, and nothing is timed if one case differs. Each batch body is asked of
both too, and they must agree on every resource. Cerbos's protos are not a dependency:
the few messages used are described here with protobuf descriptors (field numbers as in
cerbos/request/v1, engine/v1, response/v1 and effect/v1).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
)
from google.protobuf.message import Message

from attestation._ca import CertificateAuthority
from benchmarks._common import H2LOAD_MISSING, skipped, table
from benchmarks._load import (
    LoadResult,
    Server,
    Stream,
    call,
    frame,
    free_port,
    h2load_version,
    merge,
    run_h2load,
    workdir,
)
from benchmarks.bench_grpc import (
    AUTHORIZE,
    BATCH,
    BUNDLE,
    FULL,
    QUICK,
    Case,
    Runner,
    as_attested_device,
    bundle_cases,
    cores,
    docket_server,
    per_core,
    verify_authorize,
)
from engine._service.constants import ATTESTED_DEVICE_FIELDS
from sdk.v1 import decisions_pb2 as pb

HERE = Path(__file__).resolve().parent
CERBOS_DIR = HERE / "cerbos"
NPM_PREFIX = HERE / ".out" / "cerbos-npm"
CERBOS_VERSION = "0.51.0"
CHECK_RESOURCES = "/cerbos.svc.v1.CerbosService/CheckResources"
READY_TIMEOUT_S = 60.0
NPM_TIMEOUT_S = 300.0

# The decision compared: a clinician reads EU patient records (restricted) from an
# attested, encrypted, managed device in the EU, with MFA. Allowed by the department
# permit (and ownership); every guard on restricted data is evaluated on the way.
CASE = "restricted-record-from-attested-encrypted-eu-device"
CONNECTIONS = 16  # one request in flight on each, as Docket's closed-loop Authorize
ROUNDS = 3  # alternating Docket and Cerbos runs, FULL.authorize seconds in all for each
# Batches: BatchAuthorize of N requests against CheckResources of N resources, the same
# decisions (one principal and context, as CheckResources takes them), BATCH_ROUND_S
# seconds (h2load takes whole seconds) per side and size in each of the alternating rounds.
BATCH_SIZES = (10, 100)
BATCH_ROUND_S = 3
BATCH_CONNECTIONS = 8
BATCH_ACTIONS = ("read", "write", "delete", "share")

CLEARANCE = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
ROLES = {"User": "user", "Workload": "workload"}


# --- the binary --------------------------------------------------------------------------


def cerbos_binary() -> tuple[Path | None, str]:
    """The Cerbos binary (installed with npm on first use), or None and the reason."""
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    system = platform.system().lower()
    if arch is None or system not in ("linux", "darwin"):
        return None, f"no Cerbos npm binary for {platform.system()} {platform.machine()}"
    package = f"cerbos-{system}-{arch}"
    binary = NPM_PREFIX / "node_modules" / "@cerbos" / package / package
    if binary.exists():
        return binary, ""
    npm = shutil.which("npm")
    if npm is None:
        return None, "npm not found (Cerbos is installed from the npm package `cerbos`)"
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    argv = [npm, "install", "--no-audit", "--no-fund", "--prefix", str(NPM_PREFIX)]
    print(f"  installing Cerbos: {' '.join(argv[1:])} cerbos@{CERBOS_VERSION}", flush=True)
    try:
        result = subprocess.run(
            [*argv, f"cerbos@{CERBOS_VERSION}"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"npm install cerbos did not finish within {NPM_TIMEOUT_S:.0f} s"
    if result.returncode != 0 or not binary.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return None, f"npm install cerbos failed: {' / '.join(tail)}"
    return binary, ""


@contextmanager
def cerbos_server(binary: Path, audit: Path) -> Iterator[tuple[str, int]]:
    """Start Cerbos on free ports with benchmarks/cerbos, its audit log (the ``local``
    backend: asynchronous, never fsynced) in the directory ``audit``; yield its gRPC
    address and process id; stop it (SIGTERM, wait) after."""
    grpc_addr = f"127.0.0.1:{free_port()}"
    argv = [
        str(binary),
        "server",
        "--log-level=warn",  # at info, Cerbos logs every call ("Handled request"); Docket does not
        f"--config={CERBOS_DIR / 'config.yaml'}",
        f"--set=server.grpcListenAddr={grpc_addr}",
        f"--set=server.httpListenAddr=127.0.0.1:{free_port()}",
        f"--set=storage.disk.directory={CERBOS_DIR / 'policies'}",
        f"--set=audit.local.storagePath={audit}",
    ]
    server = Server(argv, cwd=CERBOS_DIR, name="cerbos server")
    try:
        server.wait_for_port(grpc_addr, READY_TIMEOUT_S)
        print(f"  cerbos {CERBOS_VERSION} listening on {grpc_addr}", flush=True)
        yield grpc_addr, server.proc.pid
    finally:
        code = server.stop()
        print(f"  cerbos stopped (exit {code})", flush=True)


# --- Cerbos messages ----------------------------------------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str, number: int, kind: _F.Type.ValueType, type_name: str = "", *, repeated: bool = False
) -> _F:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    field = _F(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _map_entry(
    name: str, kind: _F.Type.ValueType, type_name: str
) -> descriptor_pb2.DescriptorProto:
    entry = descriptor_pb2.DescriptorProto(
        name=name,
        field=[_field("key", 1, _F.TYPE_STRING), _field("value", 2, kind, type_name)],
    )
    entry.options.map_entry = True
    return entry


def _message(
    name: str,
    fields: list[_F],
    nested: list[descriptor_pb2.DescriptorProto] | None = None,
) -> descriptor_pb2.DescriptorProto:
    return descriptor_pb2.DescriptorProto(name=name, field=fields, nested_type=nested or [])


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    """The subset of Cerbos's API the benchmark sends and reads."""
    string, message, enum = _F.TYPE_STRING, _F.TYPE_MESSAGE, _F.TYPE_ENUM
    value = ".google.protobuf.Value"
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    effect = descriptor_pb2.FileDescriptorProto(
        name="cerbos/effect/v1/effect.proto", package="cerbos.effect.v1", syntax="proto3"
    )
    effect.enum_type.add(
        name="Effect",
        value=[
            descriptor_pb2.EnumValueDescriptorProto(name=name, number=number)
            for number, name in enumerate(
                ("EFFECT_UNSPECIFIED", "EFFECT_ALLOW", "EFFECT_DENY", "EFFECT_NO_MATCH")
            )
        ],
    )
    attr = _map_entry("AttrEntry", message, value)
    ns = ".cerbos.engine.v1"
    engine = descriptor_pb2.FileDescriptorProto(
        name="cerbos/engine/v1/engine.proto",
        package="cerbos.engine.v1",
        syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
        message_type=[
            _message(
                "Principal",
                [
                    _field("id", 1, string),
                    _field("policy_version", 2, string),
                    _field("roles", 3, string, repeated=True),
                    _field("attr", 4, message, f"{ns}.Principal.AttrEntry", repeated=True),
                    _field("scope", 5, string),
                ],
                [attr],
            ),
            _message(
                "Resource",
                [
                    _field("kind", 1, string),
                    _field("policy_version", 2, string),
                    _field("id", 3, string),
                    _field("attr", 4, message, f"{ns}.Resource.AttrEntry", repeated=True),
                    _field("scope", 5, string),
                ],
                [attr],
            ),
        ],
    )
    request = descriptor_pb2.FileDescriptorProto(
        name="cerbos/request/v1/request.proto",
        package="cerbos.request.v1",
        syntax="proto3",
        dependency=["cerbos/engine/v1/engine.proto"],
        message_type=[
            _message(
                "CheckResourcesRequest",
                [
                    _field("request_id", 1, string),
                    _field("include_meta", 2, _F.TYPE_BOOL),
                    _field("principal", 3, message, ".cerbos.engine.v1.Principal"),
                    _field(
                        "resources",
                        4,
                        message,
                        ".cerbos.request.v1.CheckResourcesRequest.ResourceEntry",
                        repeated=True,
                    ),
                ],
                [
                    _message(
                        "ResourceEntry",
                        [
                            _field("actions", 1, string, repeated=True),
                            _field("resource", 2, message, ".cerbos.engine.v1.Resource"),
                        ],
                    )
                ],
            )
        ],
    )
    result = ".cerbos.response.v1.CheckResourcesResponse.ResultEntry"
    response = descriptor_pb2.FileDescriptorProto(
        name="cerbos/response/v1/response.proto",
        package="cerbos.response.v1",
        syntax="proto3",
        dependency=["cerbos/effect/v1/effect.proto"],
        message_type=[
            _message(
                "CheckResourcesResponse",
                [
                    _field("request_id", 1, string),
                    _field("results", 2, message, result, repeated=True),
                    _field("cerbos_call_id", 3, string),
                ],
                [
                    _message(
                        "ResultEntry",
                        [
                            _field("resource", 1, message, result + ".Resource"),
                            _field("actions", 2, message, result + ".ActionsEntry", repeated=True),
                        ],
                        [
                            _message(
                                "Resource",
                                [_field("id", 1, string), _field("kind", 2, string)],
                            ),
                            _map_entry("ActionsEntry", enum, ".cerbos.effect.v1.Effect"),
                        ],
                    )
                ],
            )
        ],
    )
    for file in (effect, engine, request, response):
        pool.Add(file)
    return pool


def _new(full_name: str) -> Message:
    cls = message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))
    return cls()


def check_resources(principal: dict[str, Any], entries: list[tuple[dict[str, Any], str]]) -> bytes:
    """A serialized CheckResourcesRequest: one principal, and each (resource, action) of
    ``entries`` as a resource entry of its own, in order."""
    body = {
        "requestId": "docket-bench",
        "principal": principal,
        "resources": [{"actions": [action], "resource": resource} for resource, action in entries],
    }
    message = json_format.ParseDict(body, _new("cerbos.request.v1.CheckResourcesRequest"))
    return message.SerializeToString()


def effects_of(reply: bytes, actions: list[str]) -> list[str]:
    """The effect (``EFFECT_ALLOW``...) a CheckResourcesResponse gives each resource entry,
    in order; ``actions[i]`` is the action entry i asked about."""
    message = _new("cerbos.response.v1.CheckResourcesResponse")
    message.ParseFromString(reply)
    decoded = json_format.MessageToDict(message)
    results = decoded.get("results", [])
    if len(results) != len(actions):
        raise RuntimeError(
            f"CheckResources: {len(results)} results, expected {len(actions)}: {decoded}"
        )
    return [
        str(result.get("actions", {}).get(action, "EFFECT_UNSPECIFIED"))
        for result, action in zip(results, actions, strict=True)
    ]


# --- Docket requests as Cerbos requests -------------------------------------------------


@cache
def _entities() -> dict[tuple[str, str], dict[str, Any]]:
    rows = json.loads((BUNDLE / "entities.json").read_text())
    return {
        (row["uid"]["type"].removeprefix("Docket::"), row["uid"]["id"]): row["attrs"]
        for row in rows
    }


def _level(attribute: dict[str, Any]) -> int:
    return CLEARANCE[attribute["__entity"]["id"]]


def to_cerbos(request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A Docket request (policies/tests shape) as Cerbos principal, resource and action."""
    kind, name = request["principal"]["type"], request["principal"]["id"]
    who = _entities()[(kind, name)]
    attr: dict[str, Any] = {"clearance": _level(who["clearance"])}
    if kind == "User":
        attr["department"] = who["department"]
    else:
        attr["namespace"] = who["namespace"]
    attr["session"] = request.get("context") or {}
    principal = {"id": name, "roles": [ROLES[kind]], "attr": attr}
    data = _entities()[("Data", request["resource"]["id"])]
    resource = {
        "kind": "data",
        "id": request["resource"]["id"],
        "attr": {
            "classification": _level(data["classification"]),
            "department": data["department"],
            "namespace": data["namespace"],
            "owner": data["owner"]["__entity"]["id"],
            "residency": data["residency"],
            "regulated": data["regulated"],
        },
    }
    return principal, resource, request["action"]["id"]


def data_cases() -> list[tuple[str, dict[str, Any], str]]:
    """(name, request, expected decision) of access.yaml's Data cases with no inline entities."""
    cases = yaml.safe_load((BUNDLE / "tests" / "access.yaml").read_text())["cases"]
    return [
        (case["name"], case["request"], case["expect"]["decision"])
        for case in cases
        if case["request"]["resource"]["type"] == "Data" and not case["request"].get("entities")
    ]


# --- do Docket and Cerbos agree? ----------------------------------------------------------

_DECISION = {pb.DECISION_ALLOW: "allow", pb.DECISION_DENY: "deny"}
_EFFECT = {"EFFECT_ALLOW": "allow", "EFFECT_DENY": "deny"}


@dataclass(frozen=True, slots=True)
class Agreement:
    """One case asked of both servers: what each decided, and what the case expects."""

    case: str
    docket: str  # allow, deny, or what came instead of a decision
    cerbos: str
    expected: str

    @property
    def agrees(self) -> bool:
        """Both servers decided as the case expects."""
        return self.docket == self.cerbos == self.expected


def on_the_wire(case: Case, ca: CertificateAuthority) -> Case:
    """The case as a caller sends it to ``docket serve``: an attested device's posture in a
    JWT-SVID from ``ca`` (:func:`as_attested_device`); an unattested device without the
    attested fields, which Docket alone sets (here ``attested: false``)."""
    device = case.message.context.fields.get("device")
    if device is None:
        return case
    attested = device.struct_value.fields.get("attested")
    # The value itself: as_attested_device takes a present `attested: false` for attested.
    if attested is not None and attested.bool_value:
        return as_attested_device(case, ca)
    message = pb.AuthorizeRequest()
    message.CopyFrom(case.message)
    fields = message.context.fields["device"].struct_value.fields
    for name in ATTESTED_DEVICE_FIELDS:
        if name in fields:
            del fields[name]
    return Case(case.name, message, case.expected)


def agreement(docket: str, cerbos: str, ca: CertificateAuthority) -> list[Agreement]:
    """Every case of :func:`data_cases`, asked of ``docket serve`` at ``docket`` (as
    :func:`on_the_wire` sends it) and of Cerbos at ``cerbos``."""
    wire = {case.name: case for case in bundle_cases()}
    rows = []
    for name, request, expected in data_cases():
        principal, resource, action = to_cerbos(request)
        effect = _ask(cerbos, check_resources(principal, [(resource, action)]), [action])[0]
        answer = call(docket, AUTHORIZE, on_the_wire(wire[name], ca).message.SerializeToString())
        decided = f"error {answer.code.name}"
        if answer.code == grpc.StatusCode.OK:
            reply = pb.AuthorizeResponse.FromString(answer.message)
            decided = _DECISION.get(reply.decision, pb.Decision.Name(reply.decision))
        rows.append(Agreement(name, decided, _EFFECT.get(effect, effect), expected))
    return rows


def agreement_table(rows: list[Agreement]) -> str:
    """The cases, each server's decision and the expected one; disagreements marked."""
    return table(
        ("case", "Docket", "Cerbos", "expected", "agree"),
        [
            (row.case, row.docket, row.cerbos, row.expected, "yes" if row.agrees else "NO")
            for row in rows
        ],
    )


def require_agreement(rows: list[Agreement]) -> None:
    """Raise unless both servers decide every case as it expects."""
    wrong = [row for row in rows if not row.agrees]
    if wrong:
        raise RuntimeError(
            f"Docket and Cerbos disagree on {len(wrong)} of {len(rows)} cases, nothing timed: "
            + "; ".join(
                f"{row.case} (Docket {row.docket}, Cerbos {row.cerbos}, expected {row.expected})"
                for row in wrong
            )
        )


# --- batches: BatchAuthorize against CheckResources -----------------------------------------


def batch_pairs(size: int) -> list[tuple[str, str]]:
    """(resource, action) of a batch of ``size``: every Data entity of the bundle with
    ``read``, then every one with ``write``, and so on through :data:`BATCH_ACTIONS`,
    cycled."""
    resources = [name for kind, name in _entities() if kind == "Data"]
    pairs = [(resource, action) for action in BATCH_ACTIONS for resource in resources]
    return [pairs[index % len(pairs)] for index in range(size)]


def batch_body(case: Case, size: int) -> bytes:
    """A BatchAuthorize body of ``size`` requests: ``case`` (as sent on the wire) over the
    resources and actions of :func:`batch_pairs`, one principal and context."""
    messages = []
    for resource, action in batch_pairs(size):
        message = pb.AuthorizeRequest()
        message.CopyFrom(case.message)
        message.resource.id, message.action.id = resource, action
        messages.append(message)
    return pb.BatchAuthorizeRequest(requests=messages).SerializeToString()


@dataclass(frozen=True, slots=True)
class Batch:
    """The same ``size`` decisions as a Docket BatchAuthorize and a Cerbos CheckResources
    body, each checked: framed reply sizes, and how many of them allow."""

    size: int
    docket: bytes
    cerbos: bytes
    docket_reply: int
    cerbos_reply: int
    allowed: int


def batch(docket: str, cerbos: str, case: Case, request: dict[str, Any], size: int) -> Batch:
    """``case`` (as sent on the wire) and its ``request`` (policies/tests shape) over the
    resources and actions of :func:`batch_pairs`: one principal and context, as
    CheckResources takes them. Raises unless both answer every entry, and alike."""
    pairs = batch_pairs(size)
    docket_body = batch_body(case, size)
    entries = [
        to_cerbos({**request, "resource": {"type": "Data", "id": resource},
                   "action": {"type": "Action", "id": action}})
        for resource, action in pairs
    ]  # fmt: skip
    cerbos_body = check_resources(entries[0][0], [(entry[1], entry[2]) for entry in entries])
    answer = call(docket, BATCH, docket_body)
    if answer.code != grpc.StatusCode.OK:
        raise RuntimeError(f"BatchAuthorize x{size}: gRPC status {answer.code.name}")
    results = pb.BatchAuthorizeResponse.FromString(answer.message).results
    if len(results) != size:
        raise RuntimeError(f"BatchAuthorize x{size}: {len(results)} results")
    decided = [_DECISION.get(result.decision, "no decision") for result in results]
    effects = _ask(cerbos, cerbos_body, [action for _, action in pairs])
    wrong = [
        f"{resource} {action} (Docket {mine}, Cerbos {theirs})"
        for (resource, action), mine, theirs in zip(pairs, decided, effects, strict=True)
        if mine != _EFFECT.get(theirs, theirs)
    ]
    if wrong:
        raise RuntimeError(
            f"BatchAuthorize x{size} and CheckResources x{size} disagree, nothing timed: "
            + "; ".join(wrong)
        )
    return Batch(
        size,
        docket_body,
        cerbos_body,
        len(frame(answer.message)),
        _reply_size(cerbos, cerbos_body),
        decided.count("allow"),
    )


# --- the run ----------------------------------------------------------------------------


def alternate(
    rounds: int, docket: Callable[[str], LoadResult], cerbos: Callable[[str], LoadResult]
) -> tuple[LoadResult, LoadResult]:
    """``rounds`` rounds of one Docket run and one Cerbos run (each called with the round's
    label), the order swapped every round so that other load on the machine falls on both
    alike; each side's runs pooled."""
    sides = {"docket": docket, "cerbos": cerbos}
    runs: dict[str, list[LoadResult]] = {"docket": [], "cerbos": []}
    for index in range(rounds):
        for which in ("docket", "cerbos") if index % 2 == 0 else ("cerbos", "docket"):
            runs[which].append(sides[which](f"round {index + 1}"))
    return merge(runs["docket"]), merge(runs["cerbos"])


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the comparison, print its tables, return its figures."""
    version = h2load_version()
    if version is None:
        return skipped(H2LOAD_MISSING)
    binary, reason = cerbos_binary()
    if binary is None:
        return skipped(reason)
    times = QUICK if quick else FULL
    request, expected = next((r, e) for name, r, e in data_cases() if name == CASE)
    body = single_check(request)
    rounds = 1 if quick else ROUNDS
    seconds, batch_seconds = times.authorize / rounds, BATCH_ROUND_S
    with (
        workdir("docket-bench-cerbos-") as tmp,
        cerbos_server(binary, tmp / "cerbos-audit") as (address, pgid),
        docket_server(tmp / "data") as server,
    ):
        ca = CertificateAuthority.load(tmp / "data" / "ca")
        rows = agreement(server.grpc, address, ca)
        print(agreement_table(rows))
        require_agreement(rows)
        print(
            f"  verified: Docket and Cerbos decide all {len(rows)} Data cases of access.yaml "
            "(no inline entities) as the cases expect"
        )
        docket_case = on_the_wire(next(c for c in bundle_cases() if c.name == CASE), ca)
        effect = _ask(address, body, [request["action"]["id"]])[0]
        reply_size = _reply_size(address, body)
        print(f"  verified: {CASE}: Cerbos {effect}, expected {expected}")
        size = verify_authorize(server.grpc, docket_case)
        print(f"  verified: {CASE}: Docket {expected}")
        batches = [batch(server.grpc, address, docket_case, request, n) for n in BATCH_SIZES]
        for each in batches:
            print(
                f"  verified: BatchAuthorize x{each.size} and CheckResources x{each.size} "
                f"({CASE}'s principal and context; {each.allowed} allow, "
                f"{each.size - each.allowed} deny) agree on every resource"
            )
        runner = Runner(server, tmp, times)

        def docket_run(
            label: str, path: str, body: bytes, reply: int, conns: int, duration: float
        ) -> LoadResult:
            return runner.measure(label, path, [Stream(body, conns)], [reply], duration)

        def cerbos_run(body: bytes, reply: int, conns: int, duration: float) -> LoadResult:
            return run_h2load(
                f"http://{address}{CHECK_RESOURCES}",
                [Stream(body, conns)],
                duration_s=duration,
                warm_up_s=times.warm_up,
                response_sizes=[reply],
                workdir=tmp,
                server_pgid=pgid,
            )

        docket_body = docket_case.message.SerializeToString()
        single = alternate(
            rounds,
            lambda label: docket_run(
                f"Docket, {label}", AUTHORIZE, docket_body, size, CONNECTIONS, seconds
            ),
            lambda _: cerbos_run(body, reply_size, CONNECTIONS, seconds),
        )
        batched = {
            each.size: alternate(
                rounds,
                lambda label, each=each: docket_run(
                    f"Docket x{each.size}, {label}",
                    BATCH,
                    each.docket,
                    each.docket_reply,
                    BATCH_CONNECTIONS,
                    batch_seconds,
                ),
                lambda _, each=each: cerbos_run(
                    each.cerbos, each.cerbos_reply, BATCH_CONNECTIONS, batch_seconds
                ),
            )
            for each in batches
        }
        audit_bytes = sum(  # on disk: Badger's value log file is sparse, 1 GiB long
            f.stat().st_blocks * 512 for f in (tmp / "cerbos-audit").rglob("*") if f.is_file()
        )
    return _report(
        version, rows, single, batched, runner, rounds, (seconds, batch_seconds),
        times.warm_up, audit_bytes,
    )  # fmt: skip


def single_check(request: dict[str, Any]) -> bytes:
    """A Docket request (policies/tests shape) as a CheckResourcesRequest of one resource."""
    principal, resource, action = to_cerbos(request)
    return check_resources(principal, [(resource, action)])


def _report(
    version: str,
    rows: list[Agreement],
    single: tuple[LoadResult, LoadResult],
    batched: dict[int, tuple[LoadResult, LoadResult]],
    runner: Runner,
    rounds: int,
    seconds: tuple[float, float],
    warm_up: float,
    audit_bytes: int,
) -> dict[str, Any]:
    """Print the tables, targets and warnings; the figures as JSON-ready values."""
    docket, cerbos = single
    name = f"Cerbos {CERBOS_VERSION}"
    table_rows = [_row("Docket Authorize", docket, 1), _row(f"{name} CheckResources", cerbos, 1)]
    for size, (mine, theirs) in batched.items():
        table_rows += [
            _row(f"Docket BatchAuthorize x{size}", mine, size),
            _row(f"{name} CheckResources x{size}", theirs, size),
        ]
    headers = (
        *("server", "calls/s", "decisions/s", "p50 ms", "p90 ms", "p99 ms", "max ms"),
        *("cores srv/h2load/other", "calls per server core-s"),
    )
    print(table(headers, table_rows))
    ratio = docket.per_second / cerbos.per_second
    docket_core, cerbos_core = per_core(docket), per_core(cerbos)
    core_ratio = docket_core / cerbos_core if docket_core and cerbos_core else None
    print(
        f"Docket/Cerbos, one resource: throughput {ratio:.2f}x, p50 "
        f"{docket.p50_ms / cerbos.p50_ms:.2f}x, p99 {docket.p99_ms / cerbos.p99_ms:.2f}x"
        + ("" if core_ratio is None else f", calls per server core-second {core_ratio:.2f}x")
    )
    print(
        f"tool: {version}; Authorize and CheckResources x1: one body ({CASE}), {CONNECTIONS} "
        f"connections; batches: one body per size, {BATCH_CONNECTIONS} connections; one call "
        f"in flight on each connection, the same for both servers; {rounds} round(s) of "
        f"{seconds[0]:g} s (batches {seconds[1]:g} s) after {warm_up:g} s warm-up each, "
        "alternating; both servers up throughout; Docket with --workers 2, every decision "
        "durable in its audit log before the answer; Cerbos with GOMAXPROCS=2, its audit log "
        f"on (local backend, asynchronous, not fsynced; {audit_bytes / 1e6:,.1f} MB on disk "
        "at the end)"
    )
    targets = []
    for size, (mine, theirs) in batched.items():
        met = mine.per_second >= theirs.per_second  # decisions/s: both x size
        targets.append((size, met))
        mine_core, theirs_core = per_core(mine), per_core(theirs)
        print(
            f"target: BatchAuthorize x{size} decisions/s ≥ CheckResources x{size}'s — "
            f"{'MET' if met else 'NOT MET'} (Docket {mine.per_second * size:,.0f}/s, Cerbos "
            f"{theirs.per_second * size:,.0f}/s: {mine.per_second / theirs.per_second:.2f}x"
            + (
                f"; per server core-second {mine_core / theirs_core:.2f}x)"
                if mine_core and theirs_core
                else ")"
            )
        )
    warnings = runner.warnings
    for label, result in [(f"{name} CheckResources", cerbos)] + [
        (f"{name} CheckResources x{size}", theirs) for size, (_, theirs) in batched.items()
    ]:
        if result.failed or not result.data_ratio >= 0.99:
            warnings.append(
                f"{label}: {result.failed} failed, {result.data_ratio:.1%} of the expected "
                "message bytes: some calls ended in an error"
            )
    for warning in warnings:
        print(f"WARNING: {warning}")

    def figures(result: LoadResult, size: int) -> dict[str, Any]:
        return {**result.figures(), "decisions_per_second": round(result.per_second * size, 1)}

    return {
        "tool": version,
        "cerbos_version": CERBOS_VERSION,
        "case": CASE,
        "agreement": [asdict(row) for row in rows],
        "rounds": rounds,
        "docket": {
            **figures(docket, 1),
            "connections_per_worker": runner.split,
            "server_not_ok": runner.not_ok,
        },
        "cerbos": figures(cerbos, 1),
        "cerbos_audit_bytes": audit_bytes,
        "throughput_ratio_docket_over_cerbos": round(ratio, 3),
        "per_server_core_ratio_docket_over_cerbos": (
            None if core_ratio is None else round(core_ratio, 3)
        ),
        "batch": {
            str(size): {
                "docket": figures(mine, size),
                "cerbos": figures(theirs, size),
                "ratio_docket_over_cerbos": round(mine.per_second / theirs.per_second, 3),
            }
            for size, (mine, theirs) in batched.items()
        },
        "targets": {f"batch{size}_at_least_cerbos": met for size, met in targets},
        "warnings": warnings,
    }


def _ask(address: str, body: bytes, actions: list[str]) -> list[str]:
    answer = call(address, CHECK_RESOURCES, body)
    if answer.code != grpc.StatusCode.OK:
        raise RuntimeError(f"CheckResources: gRPC status {answer.code.name}: {answer.details}")
    return effects_of(answer.message, actions)


def _reply_size(address: str, body: bytes) -> int:
    return len(frame(call(address, CHECK_RESOURCES, body).message))


def _row(label: str, result: LoadResult, size: int) -> tuple[object, ...]:
    return (
        label,
        round(result.per_second),
        round(result.per_second * size),
        f"{result.p50_ms:.2f}",
        f"{result.p90_ms:.2f}",
        f"{result.p99_ms:.2f}",
        f"{result.max_ms:.2f}",
        cores(result),
        "?" if per_core(result) is None else round(per_core(result) or 0),
    )
