"""SageMaker training on-demand prices of the job's region, for a cost ESTIMATE of finished jobs.

The price comes from the AWS Price List API (GetProducts of AmazonSageMaker, the "ML Instance"
product of the instance type for Training in the region), cached for a day. When that cannot be
read (no pricing:GetProducts permission, no network, no product), a small dated table of US East
(N. Virginia) list prices stands in, noted from https://aws.amazon.com/sagemaker/pricing/ on
2025-06-01, and the estimate says so. Either way it is not a bill: savings plans, taxes and price
changes are not applied. An instance type in neither gets no estimate (None) rather than a guess.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from mlops.aws import AWS_ERRORS
from mlops.errors import error_text

logger = logging.getLogger(__name__)

PRICES_AS_OF = "2025-06-01"
PRICE_REGION = "us-east-1"
# The Price List API answers in a few regions only; us-east-1 serves every region's prices.
PRICE_LIST_API_REGION = "us-east-1"
CACHE_SECONDS = 24 * 3600.0

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


class PriceList:
    """Hourly on-demand training prices by region and instance type: AWS's Price List API, then the table."""

    def __init__(self, client: Callable[[], Any], *, clock: Callable[[], float] = time.time):
        self._client = client
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[float, float | None, str]] = {}
        self._lock = threading.Lock()

    def hourly(self, instance_type: str, region: str) -> tuple[float | None, str]:
        """Return (USD per instance-hour or None, where the price comes from)."""
        key = (region, instance_type)
        with self._lock:
            cached = self._cache.get(key)
        if cached and self.clock() - cached[0] < CACHE_SECONDS:
            return cached[1], cached[2]
        price, source = self._ask(instance_type, region)
        if price is None and instance_type in ON_DEMAND_USD_PER_HOUR:
            price = ON_DEMAND_USD_PER_HOUR[instance_type]
            source = (f"the {PRICE_REGION} list price as of {PRICES_AS_OF} from the executor's table"
                      f"{'' if region == PRICE_REGION else f', not {region} prices'} ({source})")
        with self._lock:
            self._cache[key] = (self.clock(), price, source)
        return price, source

    def _ask(self, instance_type: str, region: str) -> tuple[float | None, str]:
        filters = [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in (
            ("productFamily", "ML Instance"), ("regionCode", region), ("instanceName", instance_type),
            ("platoinstancetype", "Training"))]
        try:
            answer = self._client().get_products(ServiceCode="AmazonSageMaker", Filters=filters, MaxResults=10)
        except AWS_ERRORS as exc:
            logger.info("no price from the AWS Price List API for %s in %s: %s", instance_type, region,
                        error_text(exc))
            return None, f"the AWS Price List API did not answer: {error_text(exc)}"
        for product in answer.get("PriceList", []):
            for term in json.loads(product).get("terms", {}).get("OnDemand", {}).values():
                for dimension in term.get("priceDimensions", {}).values():
                    usd = dimension.get("pricePerUnit", {}).get("USD")
                    if usd and float(usd) > 0:
                        return float(usd), f"the AWS Price List API, {region} on-demand"
        return None, f"the AWS Price List API has no Training price for {instance_type} in {region}"

    def estimate(self, instance_type: str, region: str, billable_seconds: float | None,
                 instance_count: int = 1) -> tuple[float | None, str]:
        """Return (estimated USD cost or None, a note saying how it was made)."""
        if billable_seconds is None:
            return None, "no estimate: SageMaker reported no billable time"
        price, source = self.hourly(instance_type, region)
        if price is None:
            return None, f"no estimate: no price for {instance_type} ({source})"
        cost = round(price * billable_seconds * max(instance_count, 1) / 3600.0, 4)
        return cost, f"estimate: {source} x billable seconds x instance count; not a bill"
