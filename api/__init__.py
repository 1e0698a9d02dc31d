"""The HTTP API: blueprints, authentication and error answers."""
from __future__ import annotations

import logging
import random
from flask import Flask, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from api.access import is_public
from api.auth import authenticate
from db import StoreUnavailable
from mlops.errors import (AccessDenied, BackendError, Conflict, DeadlineExceeded, InvalidRequest, MalformedRequest,
                          NotAcceptable, NotFound, NotSupported, Overloaded, QuotaExceeded, StorageFull, TooLarge)

logger = logging.getLogger(__name__)

# The one place a domain error becomes an HTTP status; the most specific class of an error decides.
STATUS_OF_ERROR: dict[type[Exception], int] = {
    MalformedRequest: 400, AccessDenied: 403, NotFound: 404, NotAcceptable: 406, Conflict: 409, TooLarge: 413,
    InvalidRequest: 422, QuotaExceeded: 429, NotSupported: 501, BackendError: 502, StoreUnavailable: 503,
    Overloaded: 503, DeadlineExceeded: 504, StorageFull: 507,
}


def register(app: Flask) -> None:
    """Register every blueprint, the authentication check and the error handlers."""
    from api import (dashboard, docs, downloads, execute, mlops_models, mlops_training, model_share, ops, rerun,
                     training, tuning)

    model_share.init_app(app, app.config["EXECUTOR"].config)
    app.register_blueprint(execute.blueprint)
    app.register_blueprint(training.blueprint)
    app.register_blueprint(tuning.blueprint)
    app.register_blueprint(rerun.blueprint)
    app.register_blueprint(downloads.blueprint)
    app.register_blueprint(mlops_models.blueprint)
    app.register_blueprint(mlops_training.blueprint)
    app.register_blueprint(mlops_training.cloud_blueprint)
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(docs.blueprint)
    app.register_blueprint(dashboard.blueprint)
    app.before_request(_assign_request_id)
    app.before_request(_authenticate)
    app.after_request(_add_request_id)
    app.register_error_handler(InvalidRequest, domain_error)
    app.register_error_handler(BackendError, domain_error)
    app.register_error_handler(StoreUnavailable, domain_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)


def _assign_request_id() -> None:
    supplied = request.headers.get("X-Request-ID", "")
    # A request id only tells log lines apart, it guards nothing: the Mersenne Twister gives one without
    # the system call (and the thread switch it invites under load) that uuid4's urandom costs.
    g.request_id = supplied if supplied.isalnum() and len(supplied) <= 64 else f"{random.getrandbits(64):016x}"


def _add_request_id(response):
    response.headers["X-Request-ID"] = g.get("request_id", "")
    return response


def _authenticate():
    return authenticate(is_public(current_app.view_functions.get(request.endpoint)))


def status_of(exc: Exception) -> int:
    """Return the HTTP status of a domain error: that of the first of its classes in STATUS_OF_ERROR."""
    return next(STATUS_OF_ERROR[cls] for cls in type(exc).__mro__ if cls in STATUS_OF_ERROR)


def domain_error(exc: Exception):
    """Answer a domain error: a refused request names its field, a failed platform or store its reason."""
    if isinstance(exc, InvalidRequest):
        return jsonify({"error": str(exc), "field": exc.field, **exc.extra}), status_of(exc)
    if isinstance(exc, StoreUnavailable):
        logger.error("%s", exc)
        return jsonify(error=f"the job store is unavailable: {exc}"), status_of(exc)
    if isinstance(exc, Overloaded):
        # Expected under load, a line per refused request: not a warning.
        logger.info("%s %s: %s", request.method, request.path, exc)
        return jsonify(error=str(exc)), status_of(exc), {"Retry-After": str(exc.retry_after)}
    logger.warning("%s %s: %s", request.method, request.path, exc)
    return jsonify(error=str(exc)), status_of(exc)


def _http_error(exc: HTTPException):
    return jsonify(error=exc.description or exc.name), exc.code


def _internal_error(exc: Exception):
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify(error="internal error", request_id=g.get("request_id")), 500
