"""The adapter's paging: every page of a listing once, its end at a page without a new token, a bound on pages."""
from __future__ import annotations

from typing import Any

from mlops.aws import Pages


def listing(pages: int, repeat_last: bool = False):
    """A listing of `pages` pages as AWS pages one: NextToken on every page but the last (botocore's paginators)."""
    calls: list[dict[str, Any]] = []

    def call(**params: Any) -> dict[str, Any]:
        calls.append(params)
        index = int(params.get("NextToken", 0))
        page: dict[str, Any] = {"Items": [index]}
        if index + 1 < pages:
            page["NextToken"] = str(index + 1)
        elif repeat_last and index:
            page["NextToken"] = params["NextToken"]
        return page
    return call, calls


def test_every_page_is_read_once_and_the_listing_is_complete():
    call, calls = listing(3)
    pages = Pages(call, {"MaxResults": 2}, limit=10)
    assert [page["Items"] for page in pages] == [[0], [1], [2]]
    assert pages.complete
    assert calls == [{"MaxResults": 2}, {"MaxResults": 2, "NextToken": "1"}, {"MaxResults": 2, "NextToken": "2"}]


def test_a_token_answered_back_ends_the_listing():
    call, calls = listing(2, repeat_last=True)
    pages = Pages(call, {}, limit=10)
    assert len(list(pages)) == 2 and pages.complete and len(calls) == 2


def test_the_page_bound_stops_an_endless_listing_incomplete():
    call, calls = listing(100)
    pages = Pages(call, {}, limit=4, token="NextToken")
    assert len(list(pages)) == 4 and not pages.complete and len(calls) == 4
