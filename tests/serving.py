"""An in-process Docket server for tests (the fixtures are in conftest.py)."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from engine._runtime.prepare import Address, load_bundle
from engine._runtime.settings import Settings
from engine._runtime.worker import Worker
from engine._service.metrics import Metrics, serve_metrics

# Device inventory (what a caller may relay) that passes every guard of the default
# bundle but the one that needs an attested device: only a Docket credential attests.
DEVICE = {
    "disk_encrypted": True,
    "patch_age_days": 3,
    "trust_tier": "high",
    "managed": True,
}


class Running:
    """A started worker and its metrics endpoint; :meth:`stop` stops both."""

    def __init__(self, settings: Settings) -> None:
        metrics = Metrics()
        self.worker = Worker(settings, load_bundle(settings), metrics, reuse_port=False)
        self.target = f"127.0.0.1:{self.worker.start(Address('127.0.0.1', 0))}"
        self._http: WSGIServer = serve_metrics("127.0.0.1", 0, metrics.registry)
        self.metrics_url = f"http://127.0.0.1:{self._http.server_port}/metrics"

    def stop(self) -> None:
        self.worker.stop(0)
        self._http.shutdown()
        self._http.server_close()
