"""The README says what the service does: its settings are those `app.py --help` lists, its links stay in the
repository, the fields it documents are those the service answers, and the install splits service from tests."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT, pipeline_body, write_pipeline

README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTING = re.compile(r"EXECUTOR_[A-Z0-9_]+")


def test_the_documented_settings_are_exactly_those_of_app_help():
    help_text = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=60, check=True).stdout
    from_help = set(SETTING.findall(help_text))
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(SETTING.findall(table))
    assert len(from_help) > 20
    assert documented == from_help, {"missing from the README": from_help - documented,
                                     "not a setting": documented - from_help}


def test_the_readme_links_only_to_files_in_the_repository_or_to_web_pages():
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if target.startswith(("http://", "https://", "#")):
            continue
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target
    assert "../" not in README


def test_the_documented_status_fields_are_the_ones_the_service_answers(client, app):
    row = next(line for line in README.splitlines() if line.startswith("| `GET /status/<id>`"))
    documented = re.sub(r"\{[^{}]*\}", "", row.split("`{", 1)[1].rsplit("}`", 1)[0])
    fields = {name.strip() for name in documented.split(",")}
    storage = app.config["EXECUTOR"].config.storage_root
    write_pipeline(storage, "docs", "print('hi')\n")
    task_id = client.post("/execute", json=pipeline_body("docs", "python pipe1.py")).get_json()["task_id"]
    answered = set(client.get(f"/status/{task_id}").get_json())
    assert {field.split()[0] for field in fields} == answered


def test_the_service_requirements_hold_no_test_tools_and_the_test_command_installs_them():
    service = (ROOT / "requirements.txt").read_text()
    development = (ROOT / "requirements-dev.txt").read_text()
    tools = ("pytest", "moto", "schemathesis", "playwright", "scikit-learn", "openapi-spec-validator")
    assert not [tool for tool in tools if re.search(rf"^{tool}\b", service, re.MULTILINE)]
    assert all(re.search(rf"^{tool}(\[\w+\])?==", development, re.MULTILINE) for tool in tools)
    assert development.splitlines()[1] == "-r requirements.txt"
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.DOTALL)
    # The package's dependencies are requirements.txt (pyproject.toml reads it): `-e .` installs them.
    assert commands[0] == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/essedum-executor"
    assert commands[1] == ("python3 -m venv .venv && .venv/bin/pip install -r requirements-dev.txt -e . && "
                           ".venv/bin/python -m pytest -q")
    assert "-r requirements-dev.txt -e ." in (ROOT / ".ci" / "run").read_text()


def test_every_test_the_security_page_cites_exists():
    cited = set(re.findall(r"(tests/test_\w+\.py)::(test_\w+)", (ROOT / "docs" / "security.md").read_text()))
    assert len(cited) > 5
    missing = [f"{path}::{name}" for path, name in sorted(cited)
               if not re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE)]
    assert not missing, missing
