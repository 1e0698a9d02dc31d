"""Downloads of a job's outputs: any regular file under its model/ and output/ folders, and the model as model.tar.gz.

Files are streamed from the job's folder on this machine (a SageMaker job's model stays in S3; the
answer says where), opened without following links
(mlops/job_files.py): a job's code could have planted a link to any file of the executor.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, stream_with_context

from api.docs import documented
from api.views import find_job
from job import Job
from mlops.errors import NotFound, TooLarge
from mlops.job_files import TooManyEntries
from mlops.job_outputs import (CHUNK_BYTES, MAX_LISTED_FILES, NotAnOutputFile, OutputListing, list_outputs,
                               model_archive, open_output)

blueprint = Blueprint("downloads", __name__)

# RFC 5987 attr-char beyond letters and digits: what stays unescaped in a filename* value.
RFC5987_ATTR_CHARS = "!#$&+-.^_`|~"

FILE_SCHEMA = {
    "type": "object", "required": ["path", "size"],
    "properties": {"path": {"type": "string", "description": "relative to the job folder: model/… or output/…"},
                   "size": {"type": "integer"}},
}
FILE_LIST_SCHEMA = {
    "title": "JobFiles", "type": "object", "required": ["files", "truncated"],
    "properties": {
        "files": {"type": "array", "items": FILE_SCHEMA, "maxItems": MAX_LISTED_FILES,
                  "description": f"at most {MAX_LISTED_FILES} files, model/ before output/, each in path order"},
        "truncated": {"type": "boolean",
                      "description": f"the job has more than {MAX_LISTED_FILES} files and only these are listed; "
                                     "any of its files still downloads by its path"}},
}


def file_rows(listing: OutputListing) -> list[dict[str, Any]]:
    """Return the files of a listing as answered: each one's path and size."""
    return [{"path": item.path, "size": item.size} for item in listing.files]


def job_folder(job: Job) -> Path:
    """Return the job's folder on this machine; 404 when it has none (a job that never started here)."""
    folder = Path(job.output_dir)
    if not folder.is_dir():
        raise NotFound("job_id", f"job {job.id} has no folder on this machine{_elsewhere(job)}")
    return folder


def _elsewhere(job: Job) -> str:
    where = job.artifacts.get("model") or job.artifacts.get("output_path")
    return f"; its outputs are at {where}" if where else ""


def attachment(filename: str) -> str:
    """Return an attachment Content-Disposition for any file name (RFC 6266: filename* for non-ASCII)."""
    # A job names its files. The plain filename is printable ASCII without quotes or backslashes, which
    # user agents unescape differently; the exact name travels percent-encoded in UTF-8 as filename*
    # (control characters included, which a header cannot carry as they are), as werkzeug's send_file
    # does for non-ASCII names.
    printable = "".join(char if char.isprintable() else "_" for char in filename)
    ascii_name = unicodedata.normalize("NFKD", printable).encode("ascii", "ignore").decode("ascii")
    fallback = ascii_name.replace('"', "_").replace("\\", "_").strip() or "download"
    value = f'attachment; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe=RFC5987_ATTR_CHARS)}"
    return value


def _download(chunks: Iterator[bytes], filename: str, mimetype: str, size: int | None = None) -> Response:
    response = Response(stream_with_context(chunks), mimetype=mimetype, direct_passthrough=True)
    response.headers["Content-Disposition"] = attachment(filename)
    response.headers["X-Content-Type-Options"] = "nosniff"
    if size is not None:
        response.headers["Content-Length"] = str(size)
    return response


@blueprint.get("/api/jobs/<job_id>/files")
@documented(response_schema=FILE_LIST_SCHEMA)
def list_files(job_id: str):
    """List the first regular files of a job's outputs (model/ and output/) with their sizes."""
    folder = job_folder(find_job(job_id))
    listing = list_outputs(folder)
    return jsonify(files=file_rows(listing), truncated=listing.truncated)


@blueprint.get("/api/jobs/<job_id>/files/<path:name>")
@documented(binary=True)
def download_file(job_id: str, name: str):
    """Download one file of a job's outputs (a path under model/ or output/), streamed."""
    folder = job_folder(find_job(job_id))
    try:
        handle, size = open_output(folder, name)
    except NotAnOutputFile as exc:
        raise NotFound("name", str(exc)) from None

    def chunks():
        with handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    return _download(chunks(), Path(name).name, "application/octet-stream", size)


@blueprint.get("/api/jobs/<job_id>/model.tar.gz")
@documented(binary=True)
def download_model(job_id: str):
    """Download a job's model folder as model.tar.gz (the SageMaker model artifact's layout), streamed."""
    job = find_job(job_id)
    folder = job_folder(job)
    first = list_outputs(folder, ("model",), limit=1)
    # A listing cut before its first file (a crowded folder) is no proof of an empty model: the archive decides.
    if not first.files and not first.truncated:
        raise NotFound("job_id", f"job {job.id} has no model files on this machine (yet){_elsewhere(job)}")
    try:
        chunks = model_archive(folder)
    except TooManyEntries as exc:
        raise TooLarge("job_id", f"job {job.id}'s model cannot be archived whole: {exc}") from None
    return _download(chunks, "model.tar.gz", "application/gzip")
