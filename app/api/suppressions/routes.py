"""The suppression list (admin): addresses no email is sent to, put there by hard bounces
(the `bounce:process` handler). List them, or lift one so that email to it goes out again."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from app.api.common import (
    UNAVAILABLE_EXAMPLES,
    MessageOut,
    ValidationErrorOut,
    documented,
    field_error,
)
from app.api.deps import RuntimeDep
from app.api.pagination import (
    LIMIT_DEFAULT,
    CursorQuery,
    LimitQuery,
    decode_name_cursor,
    name_cursor,
    page_of,
)
from app.api.suppressions.schemas import ADDRESS_MAX, SuppressionOut, SuppressionPage
from app.db.suppressions import SuppressionStore

router = APIRouter(prefix="/suppressions", tags=["email"])

UNAVAILABLE = documented(MessageOut, "PostgreSQL is unavailable.", UNAVAILABLE_EXAMPLES)


@router.get(
    "",
    response_model=SuppressionPage,
    summary="List suppressed addresses",
    response_description="One page of suppressed addresses, in address order.",
    description="Addresses no email is sent to: an email job to one of them fails at once "
    "(no attempt is spent on it) with an event `suppressed`. A hard bounce (status 5.x.x) "
    "adds its address with the bounce as the reason. Filter by `source`; page with `cursor`.",
    responses={
        422: documented(
            ValidationErrorOut,
            "A bad limit or cursor.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["query", "limit"], "Input should be less than or equal to 500", "le"
                    ),
                )
            },
        ),
        503: UNAVAILABLE,
    },
)
async def list_suppressions(
    rt: RuntimeDep,
    source: Annotated[
        str | None,
        Query(
            max_length=50, description="Only entries from this source (`bounce`: a hard bounce)."
        ),
    ] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = LIMIT_DEFAULT,
) -> SuppressionPage:
    rows = await SuppressionStore(rt.pool).list(
        after=decode_name_cursor(cursor), source=source, limit=limit + 1
    )
    items, last = page_of(rows, limit)
    return SuppressionPage(
        items=[SuppressionOut.of(s) for s in items],
        next_cursor=None if last is None else name_cursor(last.address),
    )


@router.delete(
    "/{address}",
    response_model=SuppressionOut,
    summary="Lift a suppression",
    response_description="The entry lifted: email to the address goes out again.",
    description="Removes the address from the suppression list (compared in lower case), so "
    "that later email jobs to it are sent. Jobs that already failed because of it stay "
    "failed; replay them from the dead letters if they should go out.",
    responses={
        404: documented(
            MessageOut,
            "The address is not on the suppression list.",
            {"err": ("Example", {"detail": "nobody@example.org is not suppressed"})},
        ),
        422: documented(
            ValidationErrorOut,
            "The address is too long.",
            {
                "err": (
                    "Example",
                    field_error(
                        ["path", "address"],
                        f"String should have at most {ADDRESS_MAX} characters",
                        "string_too_long",
                    ),
                )
            },
        ),
        503: UNAVAILABLE,
    },
)
async def lift_suppression(
    rt: RuntimeDep,
    address: Annotated[str, Path(min_length=1, max_length=ADDRESS_MAX)],
) -> SuppressionOut:
    lifted = await SuppressionStore(rt.pool).delete(address)
    if lifted is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{address} is not suppressed")
    return SuppressionOut.of(lifted)
