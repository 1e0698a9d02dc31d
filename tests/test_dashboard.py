"""The jobs dashboard and the API docs page, rendered in a real headless Chromium against the real service."""
from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT, pipeline_body, wait_for, write_pipeline
from helpers_service import AUTH, METRIC_SCRIPT, TOKEN
from mlops.job_outputs import MAX_LISTED_FILES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install playwright")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
XSS_NAME = '<img src=x onerror="window.__xss=1">'
XSS_LINE = "<script>window.__xss=2</script>"
MODEL_BYTES = bytes(range(256)) * 64
MODEL_SCRIPT = f"""
import os
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.pt"), "wb").write({MODEL_BYTES!r})
open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "report.txt"), "w").write("ok")
"""


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
    write_pipeline(data_dir / "storage", "modeler", MODEL_SCRIPT, name="run.py")
    shutil.copytree(ROOT / "examples" / "pipeline", data_dir / "storage" / "example")
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

    page.goto(f"{server.url}/#token={TOKEN}")  # the root sends a browser to the dashboard
    page.wait_for_selector(f"#jobs tbody tr >> text={XSS_NAME}")
    assert page.url.split("#")[0] == f"{server.url}/execute/jobs"
    rows = page.locator("#jobs tbody tr")
    assert rows.count() == 3
    assert "token=" not in page.url  # the token leaves the address bar once read
    assert page.locator("#jobs tbody tr[data-status=RUNNING] .progress .fill").count() == 1
    assert page.locator("#jobs tbody tr[data-status=COMPLETED]").inner_text().count("100%") == 1
    assert page.locator("#jobs thead th.metric").all_inner_texts() == ["train_loss", "val_accuracy", "val_loss"]
    page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)
    shutil.copy(tmp_path / "jobs.png", "/tmp/dashboard-list.png")

    page.select_option("select[name=status]", "COMPLETED")
    sync_api.expect(rows).to_have_count(1)
    assert "status=COMPLETED" in page.url

    page.click("text=mnist-cnn")
    page.wait_for_selector("body[data-loaded=COMPLETED]")
    assert page.locator("#charts figure").evaluate_all("nodes => nodes.map(n => n.dataset.chart)") == [
        "loss", "accuracy"]
    loss = page.locator("#charts figure[data-chart=loss]")
    assert loss.locator("polyline").evaluate_all("nodes => nodes.map(n => n.dataset.series)") == [
        "train_loss", "val_loss"]
    assert len(loss.locator("polyline[data-series=train_loss]").get_attribute("points").split()) == 6
    assert loss.locator(".legend-list li").all_inner_texts() == ["train_loss", "val_loss"]  # beside, not on, the plot
    accuracy_ticks = [float(text) for text in
                      page.locator("#charts figure[data-chart=accuracy] .y-tick").all_text_contents()]
    assert 0 <= min(accuracy_ticks) and max(accuracy_ticks) <= 1  # a ratio's axis stays within 0..1
    assert page.locator("#charts figure[data-chart=loss] .x-tick").all_text_contents() == [str(n) for n in range(1, 7)]
    assert "epoch=6/6" in page.locator("#log").inner_text()
    assert page.locator("#status").inner_text() == "COMPLETED"
    assert page.locator("#request").inner_text().count("python run.py 6") == 1
    assert page.locator("#started").inner_text() and page.locator("#finished").inner_text() != "–"
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    shutil.copy(tmp_path / "dashboard.png", "/tmp/dashboard.png")

    page.goto(f"{server.url}/execute/jobs/{failed}")
    page.wait_for_selector("body[data-loaded=ERROR]")
    assert page.locator("#name").inner_text() == XSS_NAME
    assert XSS_LINE in page.locator("#log").inner_text()
    assert page.locator("#charts-section").is_hidden()  # no metrics: no empty charts
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script").count() == 0

    assert all(url.startswith(server.url) for url in page.requests), page.requests
    assert page.console_errors == []


def test_runs_are_compared_with_curves_overlaid_and_differences_highlighted(server, page, tmp_path):
    short = submit(server, "example", "python train.py --epochs 4 --learning-rate 0.2 --seconds-per-epoch 0",
                   "slow-lr-run")
    long = submit(server, "example", "python train.py --epochs 6 --learning-rate 0.35 --seconds-per-epoch 0",
                  "fast-lr-run")
    submit(server, "xss", "python run.py", "not-compared")
    for job_id in (short, long):
        assert final_status(server, job_id) == "COMPLETED"

    page.goto(f"{server.url}/execute/jobs?sort=metric:train_loss&order=asc#token={TOKEN}")
    page.wait_for_selector("#jobs tbody tr[data-status=ERROR]")
    names = page.locator("#jobs tbody tr td:nth-child(2) a").all_inner_texts()
    assert names[:2] == ["fast-lr-run", "slow-lr-run"] and names[2] == "not-compared"  # no metric: last
    page.fill("input[name=name]", "LR-RUN")
    sync_api.expect(page.locator("#jobs tbody tr")).to_have_count(2)
    assert "name=LR-RUN" in page.url
    page.check(f"#jobs tbody tr[data-id='{short}'] input[type=checkbox]")
    assert page.locator("#compare").is_disabled()
    page.check(f"#jobs tbody tr[data-id='{long}'] input[type=checkbox]")
    page.click("#compare")
    page.wait_for_selector("body[data-loaded=final]")

    assert page.locator("#charts figure").evaluate_all("nodes => nodes.map(n => n.dataset.chart)") == [
        "train_loss", "val_accuracy"]
    curves = page.locator("#charts figure[data-chart=train_loss] polyline")
    assert curves.count() == 2
    assert sorted(len(points.split()) for points in curves.evaluate_all("n => n.map(x => x.getAttribute('points'))")) \
        == [4, 6]
    assert page.locator("#comparison tr.differs[data-row=train_loss]").count() == 1
    assert page.locator("#comparison tr.differs[data-row=command]").count() == 1
    assert page.locator("#comparison tr[data-row=storage]:not(.differs)").count() == 1
    cells = page.locator("#comparison tr[data-row=train_loss] td").all_inner_texts()
    assert cells == ["0.1512", "5.0e-6"]  # (w - 3)^2 after 4 steps of 0.2 and 6 of 0.35, printed to 6 places
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    shutil.copy(tmp_path / "compare.png", "/tmp/dashboard-compare.png")
    assert all(url.startswith(server.url) for url in page.requests), page.requests
    assert page.console_errors == []


def test_the_job_page_downloads_files_and_the_model_and_reruns_the_job(server, page, tmp_path):
    job_id = submit(server, "modeler", "python run.py", "modeler")
    assert final_status(server, job_id) == "COMPLETED"
    page.goto(f"{server.url}/execute/jobs/{job_id[:8]}#token={TOKEN}")  # a prefix works in the page's URL too
    page.wait_for_selector("body[data-loaded=COMPLETED]")
    assert page.locator("#files tbody td:first-child").all_inner_texts() == ["model/model.pt",
                                                                            "output/data/report.txt"]
    assert page.locator("#files-truncated").is_hidden()
    with page.expect_download() as info:
        page.click("#files button[data-path='model/model.pt']")
    assert info.value.suggested_filename == "model.pt"
    assert Path(info.value.path()).read_bytes() == MODEL_BYTES
    with page.expect_download() as info:
        page.click("#download-model")
    assert info.value.suggested_filename == "model.tar.gz"
    with tarfile.open(info.value.path()) as archive:
        assert archive.getnames() == ["model.pt"]
        assert archive.extractfile("model.pt").read() == MODEL_BYTES
    page.screenshot(path=str(tmp_path / "job-artifacts.png"), full_page=True)
    shutil.copy(tmp_path / "job-artifacts.png", "/tmp/dashboard-artifacts.png")

    page.click("#rerun")
    page.wait_for_selector("#rerun-of:not([hidden])")
    assert page.locator("#rerun-of-link").inner_text() == job_id
    new_id = page.url.split("#")[0].rsplit("/", 1)[-1]
    assert new_id != job_id and final_status(server, new_id) == "COMPLETED"
    assert page.console_errors == []


def test_the_job_page_says_when_only_the_first_files_are_listed(server, page, data_dir):
    write_pipeline(data_dir / "storage", "many", f"""
import os
for index in range({MAX_LISTED_FILES + 5}):
    open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], f"part-{{index:04d}}.csv"), "w").close()
""", name="run.py")
    job_id = submit(server, "many", "python run.py", "many-files")
    assert final_status(server, job_id) == "COMPLETED"
    page.goto(f"{server.url}/execute/jobs/{job_id}#token={TOKEN}")
    page.wait_for_selector("body[data-loaded=COMPLETED]")
    assert page.locator("#files tbody tr").count() == MAX_LISTED_FILES
    assert page.inner_text("#files-truncated") == f"First {MAX_LISTED_FILES} files shown; the job wrote more."
    assert page.locator("#download-model").is_hidden()
    assert page.console_errors == []


def test_dashboard_asks_for_the_token_on_the_page_when_it_has_none(server, page):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server.url}/execute/jobs")
    page.fill("#token-form input[name=token]", "wrong-token")
    page.click("#token-form button")
    page.fill("#token-form input[name=token]", TOKEN)  # asked again: the first was refused
    page.click("#token-form button")
    page.wait_for_selector("#counts >> text=WAITING 0")
    assert page.locator("#error").is_hidden() and page.locator("#token-form").count() == 0
    assert dialogs == []  # no window.prompt, which blocks the page (and hangs a headless browser)


def test_docs_page_renders_the_api_offline(server, page):
    page.goto(f"{server.url}/swagger#token={TOKEN}")
    page.wait_for_selector(".opblock-summary-path[data-path='/execute']")
    assert page.locator(".opblock").count() >= 10
    assert "Authorization: Bearer <token>" in page.locator(".info").inner_text()  # rendered, not eaten as a tag
    assert page.locator(".opblock-tag").first.inner_text().startswith("execute")  # the job API first
    page.screenshot(path="/tmp/dashboard-swagger.png")
    assert all(url.startswith(server.url) for url in page.requests), page.requests
    assert page.console_errors == []
