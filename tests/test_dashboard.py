"""The jobs dashboard and the API docs page, rendered in a real headless Chromium against the real service."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import pipeline_body, wait_for, write_pipeline
from helpers_service import AUTH, METRIC_SCRIPT, TOKEN

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install playwright")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS_NAME = '<img src=x onerror="window.__xss=1">'
XSS_LINE = "<script>window.__xss=2</script>"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.requests = []
    tab.console_errors = []
    tab.on("request", lambda request: tab.requests.append(request.url))
    tab.on("console", lambda message: message.type == "error" and tab.console_errors.append(message.text))
    yield tab
    context.close()


@pytest.fixture
def server(service, data_dir: Path):
    write_pipeline(data_dir / "storage", "demo", METRIC_SCRIPT, name="run.py")
    write_pipeline(data_dir / "storage", "xss", f"print({XSS_LINE!r}, flush=True)\nraise SystemExit(3)\n",
                   name="run.py")
    return service(data_dir, env={"EXECUTOR_API_TOKEN": TOKEN, "EXECUTOR_WORKERS": "2"})


def submit(server, folder: str, command: str, name: str) -> str:
    status, body = server.request("POST", "/execute", pipeline_body(folder, command, name=name), headers=AUTH)
    assert status == 201, body
    return body["task_id"]


def final_status(server, job_id: str, timeout: float = 30) -> str:
    def ended():
        _, body = server.request("GET", f"/execute/{job_id}/getStatus", headers=AUTH)
        return body["task_status"] if body["task_status"] in ("COMPLETED", "ERROR", "CANCELLED") else None
    return wait_for(ended, timeout=timeout)


def test_dashboard_lists_filters_and_charts_jobs_without_rendering_their_data_as_html(server, page, tmp_path):
    done = submit(server, "demo", "python run.py 6", "mnist-cnn")
    failed = submit(server, "xss", "python run.py", XSS_NAME)
    assert final_status(server, done) == "COMPLETED"
    assert final_status(server, failed) == "ERROR"
    running = submit(server, "demo", "python run.py 20 1", "long-training")
    wait_for(lambda: server.request("GET", f"/status/{running}", headers=AUTH)[1]["progress"]["epoch"])

    page.goto(f"{server.url}/execute/jobs#token={TOKEN}")
    page.wait_for_selector(f"#jobs tbody tr >> text={XSS_NAME}")
    rows = page.locator("#jobs tbody tr")
    assert rows.count() == 3
    assert "token=" not in page.url  # the token leaves the address bar once read
    assert page.locator("#jobs tbody tr[data-status=RUNNING] .progress .fill").count() == 1
    assert page.locator("#jobs tbody tr[data-status=COMPLETED]").inner_text().count("100%") == 1
    page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)
    shutil.copy(tmp_path / "jobs.png", "/tmp/dashboard-list.png")

    page.select_option("select[name=status]", "COMPLETED")
    sync_api.expect(rows).to_have_count(1)
    assert "status=COMPLETED" in page.url

    page.click("text=mnist-cnn")
    page.wait_for_selector("body[data-loaded=COMPLETED]")
    assert page.locator("#loss-chart polyline[data-series=train_loss]").count() == 1
    assert page.locator("#loss-chart polyline[data-series=val_loss]").count() == 1
    assert page.locator("#accuracy-chart polyline[data-series=val_accuracy]").count() == 1
    points = page.locator("#loss-chart polyline[data-series=train_loss]").get_attribute("points")
    assert len(points.split()) == 6
    assert "epoch=6/6" in page.locator("#log").inner_text()
    assert page.locator("#status").inner_text() == "COMPLETED"
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    shutil.copy(tmp_path / "dashboard.png", "/tmp/dashboard.png")

    page.goto(f"{server.url}/execute/jobs/{failed}")
    page.wait_for_selector("body[data-loaded=ERROR]")
    assert page.locator("#name").inner_text() == XSS_NAME
    assert XSS_LINE in page.locator("#log").inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script").count() == 0

    assert all(url.startswith(server.url) for url in page.requests), page.requests
    assert page.console_errors == []


def test_dashboard_asks_for_the_token_when_it_has_none(server, page):
    page.on("dialog", lambda dialog: dialog.accept(TOKEN))
    page.goto(f"{server.url}/execute/jobs")
    page.wait_for_selector("#counts >> text=WAITING 0")
    assert page.locator("#error").is_hidden()


def test_docs_page_renders_the_api_offline(server, page):
    page.goto(f"{server.url}/swagger#token={TOKEN}")
    page.wait_for_selector(".opblock-summary-path[data-path='/execute']")
    assert page.locator(".opblock").count() >= 10
    assert all(url.startswith(server.url) for url in page.requests), page.requests
    assert page.console_errors == []
