"""A small table of SageMaker training on-demand prices, for a cost ESTIMATE of finished jobs.

Prices are US East (N. Virginia) on-demand list prices per instance-hour for SageMaker training,
as noted on 2025-06-01 from https://aws.amazon.com/sagemaker/pricing/. They are not a bill: other
regions, savings plans, taxes and price changes are not applied. An instance type that is not in
the table gets no estimate (None) rather than a guess.
"""
from __future__ import annotations

PRICES_AS_OF = "2025-06-01"
PRICE_REGION = "us-east-1"
ESTIMATE_NOTE = (f"estimate: SageMaker training on-demand list price in {PRICE_REGION} as of {PRICES_AS_OF} "
                 "x billable seconds x instance count; not a bill")

ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.48xlarge": 20.36,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
    "ml.p3.16xlarge": 28.152,
}


def estimate_cost(instance_type: str, billable_seconds: float | None, instance_count: int = 1) -> float | None:
    """Return the estimated USD cost of a training job, or None when the type or time is unknown."""
    price = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    if price is None or billable_seconds is None:
        return None
    return round(price * billable_seconds * max(instance_count, 1) / 3600.0, 4)
