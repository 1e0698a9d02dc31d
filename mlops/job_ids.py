"""Job ids as people type them: the whole id, or (like git) a unique beginning of at least 4 characters."""
from __future__ import annotations

import re
import uuid
from typing import Collection

from db import Store
from job import Job
from mlops.errors import Conflict, MalformedRequest, NotFound

# At least 4 characters, so that a prefix is typed on purpose.
ID_PREFIX = re.compile(r"^[0-9a-f-]{4,36}$")
# The JSON Schema of a request field that takes a job id.
ID_PREFIX_PATTERN = "^[0-9a-fA-F-]{4,36}$"
MAX_CANDIDATES = 10


def is_id_prefix(text: str) -> bool:
    """Tell whether text can be a job id or the beginning of one."""
    return bool(ID_PREFIX.match(text.lower()))


def find_job(store: Store, text: str, field: str, kinds: Collection[str] | None = None) -> Job:
    """Return the job a whole id or a unique beginning of one names; refuse others naming `field`.

    400 for text that is no id, 404 for an unknown id (or a job of another kind), 409 with the
    candidates for a beginning that several ids share.
    """
    try:
        job = store.get(str(uuid.UUID(text)))
    except ValueError:
        if not is_id_prefix(text):
            raise MalformedRequest(field, "is not a job id (a UUID, or at least its first 4 characters)") from None
        matches = store.find_by_prefix(text.lower())
        if len(matches) > 1:
            raise Conflict(field, f"{text!r} is the start of several job ids; give more of it",
                           candidates=store.find_by_prefix(text.lower(), limit=MAX_CANDIDATES))
        job = store.get(matches[0]) if matches else None
    if job is None or (kinds is not None and job.kind not in kinds):
        what = "job" if kinds is None else " or ".join(sorted(kinds)) + " job"
        raise NotFound(field, f"no {what} {text}")
    return job
