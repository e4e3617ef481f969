"""The services, free of any transport: decisions and placements with their audit
entries, attestation and credentials, admission reviews, device posture read from
verified credentials, the bundle watcher and its anti-rollback state, metrics. A
service takes values and returns values; gRPC, HTTP and Envoy are the adapters' business
(:mod:`engine._adapters`). Imports ``engine._core``, ``engine._service``,
``engine._errors`` and the ``audit`` and ``attestation`` packages — never an adapter,
the runtime or the CLI.
"""
