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

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
"""Each name in ``__init__.pyi`` (typed there) is imported from its module on first use
(and kept): importing a submodule does not load everything the package can do."""
