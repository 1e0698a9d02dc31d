"""Cost estimates use the job's region's price from the AWS Price List API, cached, with a dated fallback.

moto does not implement the Price List API (it answers 404 "Not yet implemented"): botocore's
Stubber answers GetProducts as AWS does, a PriceList of JSON product documents whose OnDemand terms
carry pricePerUnit.USD (the shape in the Price List API guide, "Using the query API").
"""
from __future__ import annotations

import json

import boto3
from botocore.stub import Stubber

from mlops.sagemaker.pricing import ON_DEMAND_USD_PER_HOUR, PriceList


def _product(usd: str) -> str:
    return json.dumps({"product": {"productFamily": "ML Instance",
                                   "attributes": {"regionCode": "eu-west-1", "instanceName": "ml.g5.xlarge",
                                                  "platoinstancetype": "Training"}},
                       "terms": {"OnDemand": {"SKU.TERM": {"priceDimensions": {
                           "SKU.TERM.RATE": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}}}}}})


def _client():
    return boto3.client("pricing", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")


def test_the_regions_price_comes_from_the_price_list_api_and_is_cached():
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("get_products", {"PriceList": [_product("1.583")], "FormatVersion": "aws_v1"},
                          {"ServiceCode": "AmazonSageMaker", "MaxResults": 10, "Filters": [
                              {"Type": "TERM_MATCH", "Field": "productFamily", "Value": "ML Instance"},
                              {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "eu-west-1"},
                              {"Type": "TERM_MATCH", "Field": "instanceName", "Value": "ml.g5.xlarge"},
                              {"Type": "TERM_MATCH", "Field": "platoinstancetype", "Value": "Training"}]})
        prices = PriceList(lambda: client)
        cost, note = prices.estimate("ml.g5.xlarge", "eu-west-1", 3600, 2)
        assert prices.hourly("ml.g5.xlarge", "eu-west-1")[0] == 1.583  # from the cache: no second call
    assert cost == round(1.583 * 2, 4)
    assert "Price List API, eu-west-1" in note


def test_without_the_price_list_the_dated_table_stands_in_and_says_so():
    client = _client()
    with Stubber(client) as stub:
        stub.add_client_error("get_products", "AccessDeniedException", "not authorized to perform: pricing:GetProducts")
        cost, note = PriceList(lambda: client).estimate("ml.g5.xlarge", "eu-west-1", 3600)
    assert cost == ON_DEMAND_USD_PER_HOUR["ml.g5.xlarge"]
    assert "us-east-1 list price as of 2025-06-01" in note and "not eu-west-1 prices" in note
    assert "AccessDeniedException" in note


def test_a_type_priced_nowhere_gets_no_estimate():
    client = _client()
    with Stubber(client) as stub:
        stub.add_response("get_products", {"PriceList": [], "FormatVersion": "aws_v1"})
        cost, note = PriceList(lambda: client).estimate("ml.trn1.32xlarge", "us-east-1", 60)
    assert cost is None and note.startswith("no estimate")
