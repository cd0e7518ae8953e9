"""The OpenAPI document, with what FastAPI drops put back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def _models() -> dict[str, type[BaseModel]]:
    """Every model the API documents, by name (the names of components.schemas)."""
    found: dict[str, type[BaseModel]] = {}
    stack: list[type[BaseModel]] = [BaseModel]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub.__module__.startswith(("app.api", "app.jobs")):
                found.setdefault(sub.__name__, sub)
            stack.append(sub)
    return found


def restore_null_examples(document: dict[str, Any]) -> None:
    """FastAPI drops every null from the OpenAPI document, examples included
    (fastapi/fastapi#5559), so a job's example would lack its null `failed_at`: put each
    model's own examples back into its schema."""
    models = _models()
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        model = models.get(name)
        if model is not None and "examples" in schema:
            schema["examples"] = model.model_json_schema()["examples"]
