"""Docket's decision engine: policy bundles, Cedar evaluation with a policy index,
and placement.

High level::

    bundle = PolicyBundle.load("policies")
    engine = Engine(bundle)
    decision = engine.decide(Request.model_validate(...), now=datetime.now(UTC))
"""

from engine._bundle import PolicyBundle
from engine._engine import Engine
from engine._errors import BundleError, EngineError, RequestError, SignatureError
from engine._models import Decision, EntityUID, PolicyError, Request
from engine._placement import DeniedSite, PlacedSite, Placement, Workload
from engine._policies import Policy
from engine._reload import BundleWatcher
from engine._sites import Site

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
