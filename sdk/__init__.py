"""Docket's wire contract and clients (decision client, sidecar helpers, device agent).

The protobuf contract and clients arrive with the decision-service issue; the package
exists now so the layout holds. A client install never imports cedarpy.
"""

__all__: list[str] = []
