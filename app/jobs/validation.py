"""The one validation of a job request, shared by POST /jobs, each item of POST
/jobs/batch and the producer library (`app.producer`), and the canonical request hash
that idempotency keys compare. `prepare_jobs` is the whole path from untrusted mappings
to the rows to insert."""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from app.crypto import PayloadCipher
from app.jobs.errors import InputErrors, error_item, key_conflict_error, unknown_queue_error
from app.jobs.model import InsertResult, JobToInsert
from app.jobs.request import JobCreate
from app.registry import HandlerRegistry

M = TypeVar("M", bound=JobCreate)


def validate_job(
    data: Mapping[str, Any] | JobCreate,
    *,
    max_payload_bytes: int,
    model: type[M] = JobCreate,  # type: ignore[assignment]
    loc: Sequence[str | int] = ("body",),
) -> M:
    """The job request as a model, or InputErrors naming every bad field under `loc`
    (422; 413 when the only problem is a payload over `max_payload_bytes`)."""
    return _validate(data, max_payload_bytes=max_payload_bytes, model=model, loc=loc)[0]


def _validate(
    data: Mapping[str, Any] | JobCreate,
    *,
    max_payload_bytes: int,
    model: type[M],
    loc: Sequence[str | int],
) -> tuple[M, str]:
    """validate_job, and the payload as JSON text (measured, so made anyway)."""
    if isinstance(data, model):
        job = data
    else:
        raw = data.model_dump(exclude_unset=True) if isinstance(data, JobCreate) else data
        try:
            job = model.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {"loc": [*loc, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            ]
            raise InputErrors(422, errors) from exc
    try:
        text = payload_json(job)
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits
        raise InputErrors(
            422,
            [
                error_item(
                    [*loc, "payload"], f"the payload cannot be stored as JSON: {exc}", "unencodable"
                )
            ],
        ) from None
    if "\\u0000" in text and _has_nul(job.payload):
        # PostgreSQL's jsonb cannot hold a NUL character: refuse it here, by name.
        raise InputErrors(
            422,
            [
                error_item(
                    [*loc, "payload"],
                    "strings in the payload must not contain NUL (\\u0000)",
                    "nul_character",
                )
            ],
        )
    size = len(text)
    if size > max_payload_bytes:
        raise InputErrors(
            413,
            [
                error_item(
                    [*loc, "payload"],
                    f"payload is {size} bytes; the limit is {max_payload_bytes}",
                    "too_large",
                )
            ],
        )
    return job, text


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def payload_json(job: JobCreate) -> str:
    return orjson.dumps(job.payload).decode()


def request_hash(job: JobCreate) -> str:
    """SHA-256 of the canonical request: the job's fields (sorted keys, run_at in UTC),
    without its idempotency key."""
    fields = {name: getattr(job, name) for name in JobCreate.model_fields}
    if fields["concurrency_key"] is None:
        del fields["concurrency_key"]  # hashes of requests made before the field existed hold
    if fields["run_at"] is not None:
        fields["run_at"] = fields["run_at"].astimezone(UTC).isoformat()
    canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def seal(
    job: JobCreate,
    registry: HandlerRegistry,
    cipher: PayloadCipher,
    loc: Sequence[str | int] = ("body",),
) -> dict[str, Any]:
    """The payload as it must be stored: checked against the payload model its queue's
    handler registered (if any), its sensitive fields encrypted. One function for every
    producer path (POST /jobs, the batch, app.producer). InputErrors (422) locates each
    schema error under the payload."""
    handler = registry.get(job.queue_name)
    if handler is not None and handler.payload_model is not None:
        try:
            handler.payload_model.model_validate(job.payload)
        except ValidationError as exc:
            raise InputErrors(
                422,
                [
                    {"loc": [*loc, "payload", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                    for e in exc.errors(include_url=False, include_input=False)
                ],
            ) from None
    return cipher.encrypt(job.queue_name, job.payload)


def to_insert(
    job: JobCreate,
    idempotency_key: str | None,
    sealed_payload: dict[str, Any],
    payload_text: str | None = None,
) -> JobToInsert:
    """The row to insert; the request hash is of the request as sent (encryption makes
    a new token every time), the stored payload is the sealed one. `payload_text` is
    the JSON of `job.payload`, reused when sealing left the payload as it was."""
    if payload_text is None or sealed_payload is not job.payload:
        payload_text = orjson.dumps(sealed_payload).decode()
    return JobToInsert(
        queue_name=job.queue_name,
        payload_json=payload_text,
        priority=job.priority,
        run_at=job.run_at,
        max_attempts=job.max_attempts,
        idempotency_key=idempotency_key,
        request_hash=request_hash(job) if idempotency_key is not None else None,
        concurrency_key=job.concurrency_key,
    )


def prepare_jobs(
    jobs: Iterable[Mapping[str, Any] | JobCreate],
    *,
    model: type[M],
    max_payload_bytes: int,
    registry: HandlerRegistry,
    cipher: PayloadCipher,
    loc: Sequence[str | int],
    keys: Sequence[str | None] | None = None,
) -> tuple[list[M], list[JobToInsert]]:
    """Validate each job, check it against its queue's payload model and encrypt its
    sensitive fields: the models and the rows to insert, or InputErrors naming every bad
    job by index under `loc` (413 when the only problems are payloads over the limit).
    `keys` are the jobs' idempotency keys (default: each model's `idempotency_key`)."""
    items = list(jobs)
    if not items:
        return [], []
    ((validated, rows),) = prepare_in_chunks(
        items,
        size=len(items),
        model=model,
        max_payload_bytes=max_payload_bytes,
        registry=registry,
        cipher=cipher,
        loc=loc,
        keys=keys,
    )
    return validated, rows


def prepare_in_chunks(
    jobs: Sequence[Mapping[str, Any] | JobCreate],
    *,
    size: int,
    model: type[M],
    max_payload_bytes: int,
    registry: HandlerRegistry,
    cipher: PayloadCipher,
    loc: Sequence[str | int],
    keys: Sequence[str | None] | None = None,
) -> Iterator[tuple[list[M], list[JobToInsert]]]:
    """prepare_jobs `size` jobs at a time: each chunk's models and rows as soon as they
    are made, so that a caller can insert one chunk while the next is prepared. Once a job
    is bad, no more chunks come; the rest are still checked, and InputErrors at the end
    names the same jobs as prepare_jobs would (payload-model errors only when every job
    passed validation)."""
    invalid: list[dict[str, Any]] = []
    unsealable: list[dict[str, Any]] = []
    too_large_only = True
    for first in range(0, len(jobs), size):
        with collector_paused():
            validated: list[M] = []
            texts: list[str] = []
            for index in range(first, min(first + size, len(jobs))):
                try:
                    job, text = _validate(
                        jobs[index],
                        max_payload_bytes=max_payload_bytes,
                        model=model,
                        loc=(*loc, index),
                    )
                except InputErrors as exc:
                    invalid.extend(exc.errors)
                    too_large_only &= exc.status_code == 413
                    continue
                validated.append(job)
                texts.append(text)
            if invalid:
                continue  # the rest are only validated: those errors are the answer
            rows = []
            for index, job in enumerate(validated, first):
                key = keys[index] if keys is not None else getattr(job, "idempotency_key", None)
                try:
                    sealed = seal(job, registry, cipher, (*loc, index))
                    rows.append(to_insert(job, key, sealed, texts[index - first]))
                except InputErrors as exc:
                    unsealable.extend(exc.errors)
        if not unsealable:
            yield validated, rows
    if invalid:
        raise InputErrors(413 if too_large_only else 422, invalid)
    if unsealable:
        raise InputErrors(422, unsealable)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is prepared: every object it makes
    stays alive until the insert, so each collection (some 70 of them over 10,000 jobs,
    ever longer as the batch grows) found nothing to free and took half of the time.
    Left as it is if the collector is off already (a caller's choice, or an outer
    pause)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def raise_for_refused(
    jobs: Sequence[JobCreate],
    results: Sequence[InsertResult],
    *,
    locs: Sequence[Sequence[str | int]],
    key_fields: Sequence[str],
) -> None:
    """InputErrors naming every job the insert refused: an unknown queue (422) or an
    idempotency key reused with another request (409 when that is every problem)."""
    errors: list[dict[str, Any]] = []
    conflicts = 0
    for job, result, loc, key_field in zip(jobs, results, locs, key_fields, strict=True):
        if result.outcome == "unknown_queue":
            errors.append(unknown_queue_error(job.queue_name, loc))
        elif result.outcome == "key_conflict":
            conflicts += 1
            errors.append(key_conflict_error(loc, key_field))
    if errors:
        raise InputErrors(409 if conflicts == len(errors) else 422, errors)
