"""Docket's wire contract, ``package docket.v1``: the ``.proto`` files and the code
generated from them by ``make proto`` (committed; CI fails when it is stale)."""
