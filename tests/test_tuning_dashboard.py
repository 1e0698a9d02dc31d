"""The tuning page, rendered in a real headless Chromium against the real service."""
from __future__ import annotations

from conftest import wait_for
from test_dashboard import browser, page, sync_api  # noqa: F401 - the Chromium fixtures (skipped without it)
from test_tuning_local import ROUTE, quality_tuning, write_quality_script


def test_the_tuning_page_sorts_trials_charts_the_objective_and_compares_selected_trials(service, page, tmp_path):  # noqa: F811
    data_dir = tmp_path / "service-data"
    source_dir = write_quality_script(data_dir / "storage")
    server = service(data_dir)
    request = quality_tuning(source_dir, max_trials=3, early_stopping="off",
                             ranges={"quality": {"values": [0.3, 0.9, 0.6]},
                                     "pause": {"min": 0.01, "max": 0.1, "scaling": "log"}})
    request["hyperparameters"] = {"epochs": 2}
    request["tuning"]["strategy"] = "random"
    _, created = server.request("POST", ROUTE, request)
    wait_for(lambda: server.request("GET", created["status_url"])[1]["status"] == "COMPLETED", timeout=90)

    page.goto(f"{server.url}/execute/jobs")
    page.click(f"#jobs tbody tr[data-id='{created['job_id']}'] a")
    page.wait_for_selector("body[data-loaded=COMPLETED]")
    assert page.url.split("#")[0] == f"{server.url}/execute/jobs/{created['job_id']}/tuning"
    rows = page.locator("#trials tbody tr")
    assert rows.count() == 3
    page.click("#trials th[data-sort=objective]")
    objectives = [float(text) for text in page.locator("#trials tbody td.objective").all_inner_texts()]
    assert objectives == sorted(objectives, reverse=True)
    page.click("#trials th[data-sort=objective]")
    objectives = [float(text) for text in page.locator("#trials tbody td.objective").all_inner_texts()]
    assert objectives == sorted(objectives)

    charts = page.locator("#charts figure")
    assert charts.evaluate_all("nodes => nodes.map(n => n.dataset.chart)") == [
        "val_auc by trial", "val_auc by quality", "val_auc by pause"]
    by_trial = page.locator("#charts figure[data-chart='val_auc by trial']")
    assert by_trial.locator("circle.trial").count() == 3
    assert by_trial.locator("polyline[data-series='best so far']").count() == 1
    assert page.locator("#charts figure[data-chart='val_auc by pause']").get_attribute("data-scale") == "log"
    assert page.locator("#charts figure[data-chart='val_auc by quality']").get_attribute("data-scale") is None
    assert page.locator("#charts figure[data-chart='val_auc by pause'] .x-tick").count() >= 2
    assert by_trial.locator(".x-tick").all_text_contents() == ["1", "2", "3"]
    page.screenshot(path=str(tmp_path / "tuning.png"), full_page=True)

    ids = rows.evaluate_all("nodes => nodes.map(n => n.dataset.id)")
    for trial_id in ids[:2]:
        page.check(f"#trials tbody tr[data-id='{trial_id}'] input[type=checkbox]")
    page.click("#compare")
    page.wait_for_selector("body[data-loaded=final]")
    assert page.locator("#comparison thead th a").count() == 2
    assert page.locator("#comparison tr[data-row='hyperparameters.quality']").count() == 1
    assert page.console_errors == []
    assert all(url.startswith(server.url) for url in page.requests), page.requests
