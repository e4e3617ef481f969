"""The transports: gRPC servicers (Decisions, Attestation, Audit), Envoy ext_authz, the
Kubernetes admission HTTP app, the protobuf ⇄ value conversion and the one table that
turns engine errors into gRPC statuses. An adapter checks and converts what arrives,
calls a service and converts what it returns; it holds no policy and no state of its
own. Imports ``engine._service``, ``engine._core``, ``engine._errors`` and the library
packages — never the runtime or the CLI.
"""
