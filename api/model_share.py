"""The share of the HTTP threads that model requests may hold, so that every other route finds a thread.

A model answers in up to a minute (SageMaker's invocation limit; an explanation asks it many times),
and waitress has a fixed number of threads. Were model requests to hold them all, `/health`, `/ready`
and every job's status would wait behind them; past the share a model request answers 503 at once,
with Retry-After, on either platform.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from flask import Flask, current_app

from config import Config
from mlops.admission import Gate

EXTENSION = "model_share"


def init_app(app: Flask, config: Config) -> None:
    """Give the app its gate for model requests: config.model_threads of its HTTP threads."""
    app.extensions[EXTENSION] = Gate(f"the server's share of threads for model requests ({config.model_threads})",
                                     limit=config.model_threads)


def within_model_share(view: Callable[..., Any]) -> Callable[..., Any]:
    """Run a model route only while the model share has room; otherwise answer 503 with Retry-After."""
    @functools.wraps(view)
    def admitted(*args: Any, **kwargs: Any) -> Any:
        with current_app.extensions[EXTENSION].admit():
            return view(*args, **kwargs)
    return admitted
