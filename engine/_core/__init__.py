"""The decision core: models, bundle loading and signing, Cedar sources and policies,
the policy index, evaluation, placement over sites, request limits, the Pod Security
Standards checks and policy test cases. Pure computation over values: no sockets, no
clock reads (``now`` is passed in), no audit log. Imports only ``engine._core`` and
``engine._errors`` (and libraries); everything else in ``engine`` builds on it.
"""
