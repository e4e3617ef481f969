"""The process: settings (file, environment, flags), logging, the preparation of a
server (bundle, CA, audit log, trust stores) and ``docket serve`` itself — the gRPC,
ext_authz, admission and metrics listeners, worker processes and their supervisor,
health, reload and shutdown. Imports everything below it (``engine._adapters``,
``engine._service``, ``engine._core``); only the CLI imports the runtime.
"""
