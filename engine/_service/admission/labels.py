"""The names of the labels and annotations Docket reads from objects and writes into
them."""

CLASSIFICATION_LABEL = "docket.io/classification"
RESIDENCY_LABEL = "docket.io/residency"
DECISION_ANNOTATION = "docket.io/decision-id"
REGION_LABEL = "topology.kubernetes.io/region"
TIER_LABEL = "docket.io/tier"
