"""What every producer path does to a payload before it is written: check it against the
queue's payload model (if its handler registered one), then encrypt its sensitive fields.
One function, so that POST /jobs, the batch endpoint and the Python producer agree."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from app.crypto import PayloadCipher
from app.registry import HandlerRegistry


class PayloadRejected(Exception):
    """The payload does not match the queue's schema; `errors` locate each problem
    relative to the payload (pydantic's error shape)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} payload errors")
        self.errors = errors


def seal_payload(
    registry: HandlerRegistry, cipher: PayloadCipher, queue_name: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Validate `payload` for `queue_name` and return it as it must be stored."""
    handler = registry.get(queue_name)
    if handler is not None and handler.payload_model is not None:
        try:
            handler.payload_model.model_validate(payload)
        except ValidationError as exc:
            raise PayloadRejected(
                [
                    {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                    for e in exc.errors(include_url=False, include_input=False)
                ]
            ) from None
    return cipher.encrypt(queue_name, payload)
