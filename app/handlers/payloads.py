"""The payload of each seed queue, as a pydantic model registered with its handler: a job
whose payload does not match is refused at POST /jobs (422 naming the field), never
discovered by a worker later."""

from __future__ import annotations

import re
from datetime import date
from email import message_from_string, policy
from typing import Any, Final, TypeVar

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    JsonValue,
    NameEmail,
    ValidationError,
    field_validator,
    model_validator,
)

from app.jobs.outcomes import PermanentFailure

ID_MAX: Final = 200
# An RFC 5322 field name: printable ASCII but the colon.
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")
# Headers the sender writes itself; a payload may not replace them.
RESERVED_HEADERS: Final = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "reply-to",
        "message-id",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)


def _no_line_breaks(value: str) -> str:
    # A CR or LF in a header value would start a header of the caller's choosing.
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    return value


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EmailPayload(_Payload):
    """`email-sending`: one message to one recipient."""

    to: EmailStr
    subject: str = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    from_: NameEmail | None = Field(None, alias="from")
    reply_to: EmailStr | None = None
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    campaign_id: str | None = Field(None, min_length=1, max_length=ID_MAX)
    account_id: str | None = Field(None, min_length=1, max_length=ID_MAX)

    _subject = field_validator("subject")(_no_line_breaks)

    @field_validator("headers")
    @classmethod
    def _plain_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _FIELD_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid field name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the sender: use its own field")
            _no_line_breaks(text)
        return value

    @model_validator(mode="after")
    def _a_body(self) -> EmailPayload:
        if self.text is None and self.html is None:
            raise ValueError("give `text`, `html` or both")
        return self


class BouncePayload(_Payload):
    """`bounce:process`: a delivery status notification (RFC 3464) as received."""

    message: str = Field(min_length=1, description="The raw bounce message (RFC 5322 text).")

    @field_validator("message")
    @classmethod
    def _a_report(cls, value: str) -> str:
        parsed = message_from_string(value, policy=policy.default)
        if not any(p.get_content_type() == "message/delivery-status" for p in parsed.walk()):
            raise ValueError(
                "not a delivery status notification: no message/delivery-status part (RFC 3464)"
            )
        return value


class WebhookPayload(_Payload):
    """`webhook:process`: one event POSTed to one URL, signed with the secret of
    `endpoint` (a name in WEBHOOK_SECRETS)."""

    url: AnyHttpUrl
    event: str = Field(min_length=1, max_length=200)
    data: JsonValue
    endpoint: str = Field(min_length=1, max_length=ID_MAX)


class WarmupPayload(_Payload):
    """`warmup:process`: today's warm-up messages of one mailbox."""

    mailbox: NameEmail
    recipients: list[EmailStr] = Field(min_length=1, max_length=1000)
    messages: int = Field(ge=1, le=1000, description="How many to send (round robin).")
    day: int = Field(1, ge=1, le=365, description="Day of the warm-up schedule.")
    account_id: str | None = Field(None, min_length=1, max_length=ID_MAX)


class DailyAggregatePayload(_Payload):
    """`analytics:daily-aggregate`: one UTC day (default: yesterday)."""

    day: date | None = None


class CampaignAggregatePayload(_Payload):
    """`analytics:campaign-aggregate`: one campaign (default: every campaign)."""

    campaign_id: str | None = Field(None, min_length=1, max_length=ID_MAX)


class BillingPayload(_Payload):
    """`analytics:billing-calculate`: one calendar month `YYYY-MM` (default: last month)."""

    month: str | None = Field(None, pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    account_id: str | None = Field(None, min_length=1, max_length=ID_MAX)


P = TypeVar("P", bound=BaseModel)


def parse(model: type[P], payload: dict[str, Any]) -> P:
    """The payload as its model. The API checked it already, so this fails only for a job
    made another way (SQL, an older release): a permanent failure naming the fields."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in exc.errors()
        )
        raise PermanentFailure(f"invalid {model.__name__}: {fields}") from None
