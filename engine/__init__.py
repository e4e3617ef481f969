"""Docket's decision engine: policy bundles, Cedar evaluation with a policy index,
and placement.

High level::

    bundle = PolicyBundle.load("policies")
    engine = Engine(bundle)
    decision = engine.decide(Request.model_validate(...), now=datetime.now(UTC))

Names are imported on first use (PEP 562): importing a submodule (``engine.cli``,
``docket --version``) does not load everything the package can do.
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
    from engine._core.bundle import PolicyBundle
    from engine._core.evaluate import Engine
    from engine._core.models import Decision, EntityUID, PolicyError, Request
    from engine._core.placement import DeniedSite, PlacedSite, Placement, Workload
    from engine._core.policies import Policy
    from engine._core.sites import Site
    from engine._errors import BundleError, EngineError, RequestError, SignatureError
    from engine._service.bundle_watch import BundleWatcher

_WHERE = {
    "BundleError": "engine._errors",
    "BundleWatcher": "engine._service.bundle_watch",
    "Decision": "engine._core.models",
    "DeniedSite": "engine._core.placement",
    "Engine": "engine._core.evaluate",
    "EngineError": "engine._errors",
    "EntityUID": "engine._core.models",
    "PlacedSite": "engine._core.placement",
    "Placement": "engine._core.placement",
    "Policy": "engine._core.policies",
    "PolicyBundle": "engine._core.bundle",
    "PolicyError": "engine._core.models",
    "Request": "engine._core.models",
    "RequestError": "engine._errors",
    "SignatureError": "engine._errors",
    "Site": "engine._core.sites",
    "Workload": "engine._core.placement",
}
"""Each exported name and the module that defines it."""


def __getattr__(name: str) -> typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "BundleError",
    "BundleWatcher",
    "Decision",
    "DeniedSite",
    "Engine",
    "EngineError",
    "EntityUID",
    "PlacedSite",
    "Placement",
    "Policy",
    "PolicyBundle",
    "PolicyError",
    "Request",
    "RequestError",
    "SignatureError",
    "Site",
    "Workload",
]
