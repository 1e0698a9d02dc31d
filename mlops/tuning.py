"""Hyperparameter tuning: the `tuning` object of a request checked against the script, and its Optuna study.

A tuning is one job whose trials are training jobs with the tuning as their parent. What a request
may ask is checked here once, against the script's own `--describe` declaration (its hyperparameters,
their types and bounds, the metrics it reports), before anything is created. The local platform
searches with Optuna (the strategies map to its samplers, early stopping to its pruners); the
SageMaker platform hands the same checked object to CreateHyperParameterTuningJob.
"""
from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any, Mapping

from mlops.errors import InvalidRequest
from mlops.script_contract import check_value, canonical_name

STRATEGIES = ("bayesian", "random", "grid", "hyperband")
GOALS = ("maximize", "minimize")
EARLY_STOPPING = ("auto", "off")
WARM_START_TYPES = ("identical", "transfer")
SCALINGS = ("linear", "log")
# The names SageMaker's Hyperband reads as the epochs resource (HyperbandStrategyConfig.MaxResource).
EPOCHS_LIKE = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
# A grid is every combination of its ranges' values: past this it is not a search one runs on purpose.
MAX_GRID_POINTS = 10_000
CONTINUOUS, INTEGER, CATEGORICAL = "continuous", "integer", "categorical"
_RANGE_TYPE_OF = {"float": CONTINUOUS, "int": INTEGER}

# A trial's own status, beside the job statuses: the pruner (or Hyperband) stopped it early.
STOPPED_EARLY = "STOPPED_EARLY"
# The request field of a trial that a platform started itself (a SageMaker tuning's training job): the job to follow.
TRIAL_PLATFORM_JOB = "sagemaker_training_job_name"


def trial_job_id(tuning_id: str, number: int) -> str:
    """Return the job id of a tuning's trial: the same for the same trial, so a restart never makes it twice."""
    return str(uuid.uuid5(uuid.UUID(tuning_id), f"trial-{number}"))


def check_tuning(tuning: Mapping[str, Any], fixed: Mapping[str, str], description: dict[str, Any] | None,
                 field: str = "tuning") -> dict[str, Any]:
    """Check a request's `tuning` object against the script's declaration; return it normalised."""
    declared = (description or {}).get("hyperparameters")
    ranges = {}
    for name, spec in (tuning.get("ranges") or {}).items():
        key = canonical_name(name) if declared is not None else name
        where = f"{field}.ranges.{name}"
        if key in fixed:
            raise InvalidRequest(where, "is also given as a fixed hyperparameter; give it one or the other")
        if declared is not None and key not in declared:
            raise InvalidRequest(where, f"is not a hyperparameter of the script; it takes {', '.join(sorted(declared))}")
        ranges[key] = _check_range(where, spec, declared[key] if declared is not None else None)
    if not ranges:
        raise InvalidRequest(f"{field}.ranges", "name at least one hyperparameter to tune")
    objective = dict(tuning["objective"])
    reported = _reported_metrics(description)
    if reported is not None and objective["metric"] not in reported:
        raise InvalidRequest(f"{field}.objective.metric", f"the script does not report {objective['metric']!r}; "
                                                          f"it reports {', '.join(reported)}")
    objective.setdefault("goal", "maximize")
    strategy = tuning.get("strategy", "bayesian")
    max_trials = int(tuning.get("max_trials", 10))
    max_parallel = int(tuning.get("max_parallel", 1))
    if max_parallel > max_trials:
        raise InvalidRequest(f"{field}.max_parallel", f"{max_parallel} is more than max_trials ({max_trials})")
    checked = {
        "objective": objective, "ranges": ranges, "strategy": strategy, "max_trials": max_trials,
        "max_parallel": max_parallel, "early_stopping": tuning.get("early_stopping", "auto"),
        "max_runtime_seconds": tuning.get("max_runtime_seconds"), "seed": tuning.get("seed"),
        "warm_start": tuning.get("warm_start"),
    }
    if strategy == "grid":
        checked["max_trials"] = min(max_trials, _grid_size(field, ranges))
    if strategy == "hyperband":
        checked["resource"] = _epochs_resource(field, ranges, fixed, declared)
    return checked


def _check_range(where: str, spec: Mapping[str, Any], declared: dict[str, Any] | None) -> dict[str, Any]:
    declared_type = (declared or {}).get("type")
    if "values" in spec:
        if "min" in spec or "max" in spec:
            raise InvalidRequest(where, "give either values or min and max, not both")
        values = list(spec["values"])
        if not values:
            raise InvalidRequest(f"{where}.values", "name at least one value")
        if len(set(map(str, values))) != len(values):
            raise InvalidRequest(f"{where}.values", "names a value twice")
        if declared is not None:
            for index, value in enumerate(values):
                check_value(f"{where}.values[{index}]", _flag_text(value), declared)
        return {"type": CATEGORICAL, "values": values}
    if "min" not in spec or "max" not in spec:
        raise InvalidRequest(where, "give values, or min and max")
    low, high = spec["min"], spec["max"]
    kind = spec.get("type") or _RANGE_TYPE_OF.get(declared_type, CONTINUOUS)
    if declared_type is not None and declared_type not in _RANGE_TYPE_OF:
        raise InvalidRequest(where, f"the script takes a {declared_type}: give its values instead of min and max")
    if declared_type == "int" and kind == CONTINUOUS:
        raise InvalidRequest(f"{where}.type", "the script takes an integer: a continuous range does not fit it")
    if kind == INTEGER and not all(float(bound).is_integer() for bound in (low, high)):
        raise InvalidRequest(where, "an integer range needs whole-number min and max")
    if not (low < high):
        raise InvalidRequest(f"{where}.min", f"min ({low}) must be less than max ({high})")
    scaling = spec.get("scaling", "linear")
    if scaling == "log" and low <= 0:
        raise InvalidRequest(f"{where}.scaling", "a log range needs min above 0")
    if declared is not None:
        check_value(f"{where}.min", _flag_text(low), declared)
        check_value(f"{where}.max", _flag_text(high), declared)
    if kind == INTEGER:
        low, high = int(low), int(high)
    return {"type": kind, "min": low, "max": high, "scaling": scaling}


def _flag_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _reported_metrics(description: dict[str, Any] | None) -> list[str] | None:
    if description is None or "metrics" not in description:
        return None
    return [definition["Name"] for definition in description["metrics"] if definition.get("Name") != "epoch"]


def _grid_size(field: str, ranges: dict[str, dict[str, Any]]) -> int:
    size = 1
    for name, spec in ranges.items():
        if spec["type"] == CONTINUOUS:
            raise InvalidRequest(f"{field}.ranges.{name}", "grid search needs values or an integer range, "
                                                           "not a continuous one")
        size *= len(grid_values(spec))
        if size > MAX_GRID_POINTS:
            raise InvalidRequest(f"{field}.ranges", f"the grid has more than {MAX_GRID_POINTS} points")
    return size


def grid_values(spec: Mapping[str, Any]) -> list[Any]:
    """Return the values a grid search tries for one range."""
    if spec["type"] == CATEGORICAL:
        return list(spec["values"])
    return list(range(int(spec["min"]), int(spec["max"]) + 1))


def _epochs_resource(field: str, ranges: dict[str, Any], fixed: Mapping[str, str],
                     declared: dict[str, Any] | None) -> dict[str, Any]:
    """Return Hyperband's resource: the epochs-like hyperparameter and its largest value."""
    names = [name for name in EPOCHS_LIKE if name in fixed or (declared or {}).get(name)]
    if not names:
        raise InvalidRequest(f"{field}.strategy", "hyperband needs an epochs-like hyperparameter as its resource "
                                                  f"({', '.join(EPOCHS_LIKE)}); the script takes none")
    name = names[0]
    if name in ranges:
        raise InvalidRequest(f"{field}.ranges.{name}", "hyperband decides how many epochs each trial gets: "
                                                       "give the most as a fixed hyperparameter instead of a range")
    most = int(fixed.get(name) or (declared or {})[name].get("default") or 0)
    if most < 1:
        raise InvalidRequest(f"hyperparameters.{name}", "hyperband needs at least 1 epoch")
    return {"name": name, "max": most}


# -- the Optuna study (local platform) -------------------------------------------------------------


def study_path(data_dir: Path, tuning_id: str) -> Path:
    """Return the file that keeps a tuning's study in the data folder."""
    return data_dir / "tuning" / f"{uuid.UUID(tuning_id)}.journal"


def open_study(path: Path, tuning_id: str, tuning: Mapping[str, Any]) -> Any:
    """Create or load a tuning's study, kept in an Optuna journal file written by one thread."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The journal, not SQLite: Optuna's SQLite storage reports "database is locked" under writers
    # in parallel, and the journal is an append-only file that a restart reads back whole.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    direction = "maximize" if tuning["objective"]["goal"] == "maximize" else "minimize"
    return optuna.create_study(study_name=tuning_id, storage=storage, sampler=make_sampler(tuning),
                               pruner=make_pruner(tuning), direction=direction, load_if_exists=True)


def make_sampler(tuning: Mapping[str, Any]) -> Any:
    """Return the Optuna sampler of a strategy: TPE, random, grid; Hyperband samples with TPE."""
    import optuna

    seed = tuning.get("seed")
    if tuning["strategy"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tuning["strategy"] == "grid":
        space = {name: grid_values(spec) for name, spec in tuning["ranges"].items()}
        return _grid_sampler_class()(space, seed=seed)
    # Trials run in parallel: the constant liar keeps TPE from proposing the running trials' points again.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=tuning["max_parallel"] > 1)


def _grid_sampler_class() -> type:
    import optuna

    class TunerGridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler for studies run by ask and tell.

        Its own after_trial stops `study.optimize` once the grid is covered, and raises outside it;
        here the tuning's max_trials (capped at the grid's size when checked) ends the search.
        """

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return TunerGridSampler


def make_pruner(tuning: Mapping[str, Any]) -> Any:
    """Return the Optuna pruner: Hyperband's own, the median rule for `auto`, none for `off`."""
    import optuna

    if tuning["strategy"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tuning["resource"]["max"])
    if tuning["early_stopping"] == "off":
        return optuna.pruners.NopPruner()
    # The median rule judges against completed trials only. Optuna's default waits for 5 of them; here
    # the first wave of `max_parallel` trials runs to the end together, so waiting for more than that
    # runs a second wave unjudged, and a median of one trial is that trial's noise: at least 2, at most 5.
    # Epochs count from 1 and Optuna judges a step from n_warmup_steps on: every epoch is judged, the
    # first included, as Optuna's default judges from the first report.
    startup = max(2, min(5, tuning["max_parallel"]))
    return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=1)


def suggest(trial: Any, ranges: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Ask a trial for a value of each range."""
    values = {}
    for name, spec in ranges.items():
        if spec["type"] == CATEGORICAL:
            values[name] = trial.suggest_categorical(name, spec["values"])
        elif spec["type"] == INTEGER:
            values[name] = trial.suggest_int(name, spec["min"], spec["max"], log=spec["scaling"] == "log")
        else:
            values[name] = trial.suggest_float(name, spec["min"], spec["max"], log=spec["scaling"] == "log")
    return values


def hyperparameter_text(values: Mapping[str, Any]) -> dict[str, str]:
    """Return suggested values as the strings a script's flags take."""
    return {name: _flag_text(value) for name, value in values.items()}


def warm_start_trials(study: Any, sources: list[Any], tuning: Mapping[str, Any]) -> int:
    """Add the finished trials of earlier studies to a new one; return how many were added.

    `identical` takes them all (the request was checked to search the same ranges); `transfer`
    takes those whose values lie in this search's ranges.
    """
    import optuna

    added = 0
    for source in sources:
        for trial in source.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if set(trial.params) != set(tuning["ranges"]) or trial.value is None or not math.isfinite(trial.value):
                continue
            distributions = {name: _distribution(spec) for name, spec in tuning["ranges"].items()}
            if not all(distributions[name]._contains(distributions[name].to_internal_repr(value))
                       for name, value in trial.params.items()):
                continue
            study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=distributions,
                                                      value=trial.value, user_attrs={"warm_start": True}))
            added += 1
    return added


def _distribution(spec: Mapping[str, Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec["type"] == CATEGORICAL:
        return CategoricalDistribution(spec["values"])
    if spec["type"] == INTEGER:
        return IntDistribution(spec["min"], spec["max"], log=spec["scaling"] == "log")
    return FloatDistribution(spec["min"], spec["max"], log=spec["scaling"] == "log")
