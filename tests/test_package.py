"""The project as an installable package: its wheel holds every module, page and bundled script, and its two
commands run from any folder (a real wheel built here, installed into a folder of its own)."""
from __future__ import annotations

import ast
import fnmatch
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, SERVING_LINE, http_request, pipeline_body, write_pipeline

pytest.importorskip("setuptools", reason="building the wheel needs setuptools")


def test_every_top_level_module_is_packaged():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    top_level = sorted(path.stem for path in ROOT.glob("*.py"))
    assert sorted(settings["py-modules"]) == top_level


def top_level_imports(path: Path) -> set[str]:
    """Return the top-level names a file imports, those inside functions (lazy imports) included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def test_the_listed_modules_are_those_the_commands_import_and_every_package_they_import_is_found():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    settings = project["tool"]["setuptools"]
    # Follow the imports from the installed commands' modules through the project's own top-level modules and
    # packages (all of a package's files: it is packaged whole); a name with no file here is a dependency's.
    reached = {target.partition(":")[0].partition(".")[0] for target in project["project"]["scripts"].values()}
    pending = sorted(reached)
    while pending:
        name = pending.pop()
        files = [ROOT / f"{name}.py"] if (ROOT / f"{name}.py").is_file() else sorted((ROOT / name).rglob("*.py"))
        for imported in set().union(*map(top_level_imports, files)) - reached:
            if (ROOT / f"{imported}.py").is_file() or (ROOT / imported).is_dir():
                reached.add(imported)
                pending.append(imported)
    modules = sorted(name for name in reached if (ROOT / f"{name}.py").is_file())
    assert sorted(settings["py-modules"]) == modules
    packages = sorted(reached - set(modules))
    found = settings["packages"]["find"]["include"]
    assert [name for name in packages if not any(fnmatch.fnmatchcase(name, pattern) for pattern in found)] == []
    assert {"api", "mlops", "executor_client", "training_scripts"} <= set(packages)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Build the wheel from this checkout and install it, without its dependencies, into a folder of its own."""
    work = tmp_path_factory.mktemp("package")
    # A copy: setuptools builds inside the source folder, which must stay as it is.
    source = shutil.copytree(ROOT, work / "source", ignore=shutil.ignore_patterns(
        ".git", ".venv", "venv", "data", "__pycache__", "build", "*.egg-info", "tests", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(work / "wheels"), str(source)], check=True, capture_output=True, timeout=300,
                   cwd=work)
    [wheel] = (work / "wheels").glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(work / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300, cwd=work)
    return work


def test_the_wheel_holds_the_pages_and_the_bundled_script(installed):
    [wheel] = (installed / "wheels").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"app.py", "api/static/auth.js", "api/templates/job.html", "training_scripts/train.py",
            "mlops/local/jobs.py", "executor_client/__main__.py"} <= names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "essedum-executor = app:main" in text and "executor-client = executor_client.__main__:main" in text


def test_the_installed_commands_run_from_any_folder_and_a_download_lands_where_the_user_stands(installed, tmp_path):
    site, elsewhere = installed / "site", tmp_path / "somewhere-else"
    elsewhere.mkdir()
    data = tmp_path / "data"
    write_pipeline(data / "storage", "reporter", "import os\nopen(os.path.join(os.environ['SM_OUTPUT_DATA_DIR'], "
                   "'report.txt'), 'w').write('ok')\n", name="run.py")
    # Only the installed copy is importable: not this checkout (the folder is elsewhere, the path is the site's).
    env = {key: value for key, value in os.environ.items() if not key.startswith("EXECUTOR_")}
    env.update(PYTHONPATH=str(site), PATH=f"{site / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    service = subprocess.Popen([str(site / "bin" / "essedum-executor"), "--port", "0", "--data-dir", str(data)],
                               cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            match = SERVING_LINE.search(service.stderr.readline())
            port = match and match.group(2)
        assert port, "the installed service did not report its port"
        # Its log goes on: read it, or a full pipe would stop the service.
        threading.Thread(target=service.stderr.read, daemon=True).start()
        env["EXECUTOR_PORT"] = port
        status, body = http_request(f"http://127.0.0.1:{port}", "POST", "/execute",
                                    pipeline_body("reporter", "python run.py"))
        assert status == 201, body
        client = [str(site / "bin" / "executor-client")]
        waited = subprocess.run([*client, "wait", body["task_id"][:8], "--interval", "0.2", "--no-log"], cwd=elsewhere,
                                env=env, capture_output=True, text=True, timeout=120)
        assert waited.returncode == 0, waited.stderr
        done = subprocess.run([*client, "download", body["task_id"][:8], "output/data/report.txt"], cwd=elsewhere,
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert (elsewhere / "report.txt").read_text() == "ok"
        where = subprocess.run([sys.executable, "-c", "import app, executor_client; print(app.__file__); "
                                "print(executor_client.__file__)"], cwd=elsewhere, env=env, capture_output=True,
                               text=True, timeout=60)
        assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout
    finally:
        service.terminate()
        service.wait(timeout=60)
