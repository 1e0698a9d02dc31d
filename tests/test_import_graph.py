"""The project's own modules import one another without a circle, lazy imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Tests and benchmarks import the product; nothing imports them.
OUTSIDE = {"tests", "bench", ".git", ".venv", "venv", "data"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for path in ROOT.rglob("*.py")
            if not OUTSIDE & set(path.relative_to(ROOT).parts[:-1]) and path.parent != ROOT / "tests"}


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Return the project modules a module imports: `from a import b` is a.b when that is a module, else a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    # A folder of scripts (training_scripts/) runs from itself, where `import trainer` means a sibling.
    scripts = path.parent != ROOT and not (path.parent / "__init__.py").exists()
    prefixes = (package + ".", "") if scripts else ("",)

    def known(candidate: str) -> str | None:
        for full in (prefix + candidate for prefix in prefixes):
            while full:
                if full in modules:
                    return full
                full = full.rpartition(".")[0]
        return None

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
                base = ".".join(filter(None, [*anchor, base]))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            resolved = known(target)
            if resolved and resolved != name:
                found.add(resolved)
    return found


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import circle as a path of modules, or None."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        trail.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return trail[trail.index(target):] + [target]
            if target not in state:
                circle = visit(target)
                if circle:
                    return circle
        trail.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            circle = visit(module)
            if circle:
                return circle
    return None


def test_the_walk_sees_the_imports_it_must_judge():
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert {"app", "queue_worker", "api.execute", "mlops.platforms", "mlops.local.jobs"} <= set(graph)
    assert "mlops.platforms" in graph["app"]
    assert "api.schemas" in graph["api.execute"]  # `from api import schemas` is the submodule
    assert "mlops.reporter" in graph["mlops.platform"]
    assert "mlops.local.platform" in graph["mlops.platforms"]  # a lazy import inside the function


def test_only_the_wiring_function_names_a_platform_package():
    # Routes, the queue, recovery and the app reach a platform through the interface (mlops/platform.py);
    # mlops/platforms.py alone picks one, from the configuration.
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    callers = [name for name in graph if name.split(".")[0] in ("api", "app", "queue_worker")
               or name in ("mlops.recovery", "mlops.platform", "mlops.reporter", "mlops.records")]
    reaching = {name: sorted(target for target in graph[name] if target.startswith(("mlops.local", "mlops.sagemaker")))
                for name in callers}
    assert {name: targets for name, targets in reaching.items() if targets} == {}


def test_a_circle_is_found_when_there_is_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def test_no_module_of_the_project_imports_itself_through_others():
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert find_circle(graph) is None, " -> ".join(find_circle(graph) or [])


def test_only_the_aws_adapter_imports_boto3_or_botocore():
    # essedum_launch.py runs inside the training container, where the executor's adapter is not.
    allowed = {"mlops.aws", "training_scripts.essedum_launch"}
    importers = set()
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(module.split(".")[0] in ("boto3", "botocore") for module in names):
                importers.add(name)
    assert "mlops.aws" in importers  # the walk sees the adapter's own imports
    assert importers <= allowed, sorted(importers - allowed)


def test_the_aws_adapter_is_at_the_bottom():
    # It may read the settings and raise the domain errors; whatever builds on it lives above it.
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert graph["mlops.aws"] <= {"config", "mlops.errors"}, sorted(graph["mlops.aws"])
    below = set()
    frontier = {"mlops.aws"}
    while frontier:
        below |= frontier
        frontier = set().union(*(graph[name] for name in frontier)) - below
    assert not {name for name in below if name.startswith(("mlops.sagemaker", "mlops.local", "api", "db"))}
    assert "mlops.aws" in graph["mlops.sagemaker.training_service"]
    assert "mlops.aws" not in graph["mlops.aws_statuses"] and not graph["mlops.aws_statuses"]


def test_no_platform_module_holds_the_store():
    # A platform reports through the reporter and reads through the reader the queue gives it. The seeds'
    # SageMakerTrainingService alone names the Store: its job methods take the store as the seeds' `db`
    # argument and check that it is the queue's.
    allowed = {"mlops.sagemaker.training_service"}
    holders = set()
    for name, path in project_modules().items():
        if not name.startswith(("mlops.local.", "mlops.sagemaker.")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(alias.name == "db" for alias in node.names):
                holders.add(name)
            if (isinstance(node, ast.ImportFrom) and node.module == "db"
                    and any(alias.name.endswith("Store") for alias in node.names)):
                holders.add(name)
    assert "mlops.sagemaker.training_service" in holders  # the walk sees the one that does
    assert holders <= allowed, sorted(holders - allowed)
