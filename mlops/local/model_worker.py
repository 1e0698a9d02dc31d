"""Serve one model's inference.py in a process of its own: `python -I model_worker.py`.

The executor starts this file in the sandbox, never imports it: whatever a model's code does (exit,
crash, patch the standard library) stays in this process. It talks over its stdin and stdout in
frames (two big-endian lengths, a JSON header, a body); each request names an operation of
OPERATIONS, so that a new one (explain) is one more entry. Only the standard library is imported
here until the model asks for more.
"""
from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
import traceback
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO, Callable

FRAME = struct.Struct(">II")
MAX_HEADER_BYTES = 1 << 20
MAX_BODY_BYTES = 64 << 20
# SageMaker's inference toolkit answers an exception that carries a status_code (its
# BaseInferenceToolkitError) with that status (sagemaker-inference-toolkit, transformer.py:
# Transformer.transform). A model written for it refuses requests so: the statuses a client causes are
# answered here as the refusals the executor knows; any other status is the model's failure, as a 500 is.
REFUSALS_BY_STATUS = {HTTPStatus.BAD_REQUEST: "input", HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "input",
                      HTTPStatus.NOT_ACCEPTABLE: "accept", HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "too_large"}


def read_frame(stream: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """Read one frame; None at the end of the stream."""
    prefix = _read_exactly(stream, FRAME.size)
    if prefix is None:
        return None
    header_size, body_size = FRAME.unpack(prefix)
    if header_size > MAX_HEADER_BYTES or body_size > MAX_BODY_BYTES:
        raise ValueError(f"frame too large: {header_size} + {body_size} bytes")
    header = _read_exactly(stream, header_size)
    body = _read_exactly(stream, body_size)
    if header is None or body is None:
        return None
    return json.loads(header), body


def write_frame(stream: BinaryIO, header: dict[str, Any], body: bytes = b"") -> None:
    """Write one frame and flush it."""
    encoded = json.dumps(header).encode()
    stream.write(FRAME.pack(len(encoded), len(body)) + encoded + body)
    stream.flush()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class RequestError(Exception):
    """The request, not the model, is at fault (input_fn or output_fn refused it)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ServedModel:
    """The four SageMaker PyTorch serving functions of a model and the loaded model."""

    def __init__(self, model_dir: str):
        module = _import_inference(Path(model_dir))

        def pick(name: str, default: Callable) -> Callable:
            return getattr(module, name, None) or default

        self.input_fn = pick("input_fn", default_input_fn)
        self.predict_fn = pick("predict_fn", default_predict_fn)
        self.output_fn = pick("output_fn", default_output_fn)
        self.model = pick("model_fn", default_model_fn)(model_dir)

    def invoke(self, body: bytes, content_type: str, accept: str) -> bytes:
        """Run input_fn, predict_fn and output_fn on one request."""
        data = _call_refusing(self.input_fn, (body, content_type), value_error="input")
        prediction = _call_refusing(self.predict_fn, (data, self.model))
        answer = _call_refusing(self.output_fn, (prediction, accept), value_error="accept")
        return answer.encode() if isinstance(answer, str) else bytes(answer)


def _call_refusing(function: Callable, arguments: tuple, value_error: str | None = None) -> Any:
    """Call a serving function; raise RequestError where its error refuses the request, else let it fail."""
    try:
        return function(*arguments)
    except Exception as exc:
        refusal = _refusal(exc, value_error)
        if refusal is None:
            raise
        raise refusal from None


def _refusal(exc: Exception, value_error: str | None) -> RequestError | None:
    """Return the refusal a model's error stands for: its toolkit status first, then a ValueError's kind."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        # A status outside the table is the model's failure, even on a ValueError, as on SageMaker.
        kind = REFUSALS_BY_STATUS.get(status)
        return RequestError(kind, str(getattr(exc, "message", None) or exc)) if kind else None
    if value_error and isinstance(exc, ValueError):
        return RequestError(value_error, str(exc))
    return None


def _import_inference(model_dir: Path) -> Any:
    """Import model_dir/code/inference.py, with its folder on the path for its sibling modules."""
    script = model_dir / "code" / "inference.py"
    if not script.is_file():
        return None
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location("inference", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered by name, as dataclasses and pickling look modules up there.
    sys.modules["inference"] = module
    spec.loader.exec_module(module)
    return module


def default_model_fn(model_dir: str) -> Any:
    """Load model.pt as TorchScript on the CPU."""
    import torch

    return torch.jit.load(str(Path(model_dir) / "model.pt"), map_location="cpu").eval()


def default_input_fn(body: bytes | str, content_type: str) -> Any:
    """Turn a JSON ({"instances": ...} or a bare array) or CSV body into a float tensor."""
    import torch

    media = (content_type or "").split(";", 1)[0].strip().lower()
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if media == "application/json":
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the request body is not valid JSON: {exc}") from None
        payload = payload.get("instances", payload) if isinstance(payload, dict) else payload
    elif media == "text/csv":
        payload = [[float(value) for value in line.split(",")] for line in text.splitlines() if line.strip()]
    else:
        raise ValueError(f"unsupported content type {content_type!r}: send application/json or text/csv")
    try:
        return torch.tensor(payload, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the payload is not a numeric array: {exc}") from None


def default_predict_fn(data: Any, model: Any) -> Any:
    """Run the model without gradients and return a list."""
    import torch

    with torch.inference_mode():
        return model(data).tolist()


def default_output_fn(prediction: Any, accept: str) -> str:
    """Answer {"predictions": ...} in JSON."""
    media = (accept or "application/json").split(";", 1)[0].strip().lower()
    if media not in ("application/json", "*/*"):
        raise ValueError(f"unsupported accept type {accept!r}: only application/json is offered")
    return json.dumps({"predictions": prediction})


class Worker:
    """The state of this process: the model, once loaded."""

    def __init__(self) -> None:
        self.served: ServedModel | None = None

    def load(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        self.served = ServedModel(header["model_dir"])
        return {}, b""

    def invoke(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        if self.served is None:
            raise RequestError("protocol", "no model is loaded")
        answer = self.served.invoke(body, header.get("content_type") or "", header.get("accept") or "application/json")
        return {"content_type": "application/json"}, answer


OPERATIONS: dict[str, Callable[[Worker, dict[str, Any], bytes], tuple[dict[str, Any], bytes]]] = {
    "load": Worker.load,
    "invoke": Worker.invoke,
}


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer frames until the executor closes the pipe."""
    worker = Worker()
    while True:
        frame = read_frame(requests)
        if frame is None:
            return
        header, body = frame
        operation = OPERATIONS.get(header.get("op", ""))
        try:
            if operation is None:
                raise RequestError("protocol", f"unknown operation {header.get('op')!r}")
            reply, answer = operation(worker, header, body)
            write_frame(replies, {"ok": True, **reply}, answer)
        except RequestError as exc:
            write_frame(replies, {"ok": False, "kind": exc.kind, "message": str(exc)})
        except Exception as exc:  # the model's own failure: reported, and this process serves on
            where = traceback.extract_tb(exc.__traceback__)[-1]
            message = f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno} in {where.name})"
            write_frame(replies, {"ok": False, "kind": "model", "message": message})


def main() -> None:
    """Keep the protocol's stdout to this module; what the model prints goes to stderr."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    sys.stdin = open(os.devnull)
    serve(requests, replies)


if __name__ == "__main__":
    main()
