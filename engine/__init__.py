"""Docket's decision engine: policy bundles, Cedar evaluation with a policy index,
and placement.

High level::

    bundle = PolicyBundle.load("policies")
    engine = Engine(bundle)
    decision = engine.decide(Request.model_validate(...), now=datetime.now(UTC))
"""

from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import Decision, EntityUID, PolicyError, Request
from engine._core.placement import DeniedSite, PlacedSite, Placement, Workload
from engine._core.policies import Policy
from engine._core.sites import Site
from engine._errors import BundleError, EngineError, RequestError, SignatureError
from engine._service.bundle_watch import BundleWatcher

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
