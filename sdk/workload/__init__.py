"""The SPIFFE Workload API's messages (``workload.proto``, wire-compatible with the SPIFFE
project's; README.md says where it comes from and under which licence) and the code
``make proto`` generates from it (committed; CI fails when it is stale)."""
