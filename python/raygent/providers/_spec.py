"""Which provider an agent uses, as plain data that can cross Ray, and how to build it."""

from __future__ import annotations

import os

import msgspec

from raygent.providers._base import Provider
from raygent.providers._scripted import ScriptedModel

__all__ = ["ProviderSpec", "make_provider", "resolve_provider"]


class ProviderSpec(msgspec.Struct, frozen=True):
    """``kind`` is ``"scripted"`` (offline) or ``"openai"`` (any OpenAI-compatible endpoint)."""

    kind: str
    model: str = ""
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}

    @property
    def display_name(self) -> str:
        if self.kind == "scripted":
            return ScriptedModel.name
        return f"{self.kind}:{self.model}" + (f" @ {self.base_url}" if self.base_url else "")


def resolve_provider(
    model: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> ProviderSpec:
    """Pick the provider from the arguments, then the environment.

    ``model="scripted"`` (or no model and no ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` /
    ``base_url`` configured) gives the offline scripted model. Otherwise an OpenAI-compatible
    endpoint: ``base_url`` or ``OPENAI_BASE_URL`` (default the OpenAI API), ``api_key`` or
    ``OPENAI_API_KEY`` (may be empty for local servers), model from ``model`` or
    ``RAYGENT_MODEL``.

    Raises
    ------
    ValueError
        An endpoint is configured but no model name is given.
    """
    if model == "scripted":
        return ProviderSpec(kind="scripted")
    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
    api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
    model = model or os.environ.get("RAYGENT_MODEL")
    if model is None and base_url is None and not api_key:
        return ProviderSpec(kind="scripted")
    if not model:
        raise ValueError(
            "an OpenAI-compatible endpoint is configured but no model is named: "
            "pass model=... (CLI: --model) or set RAYGENT_MODEL"
        )
    return ProviderSpec(
        kind="openai", model=model, base_url=base_url, api_key=api_key, headers=dict(headers or {})
    )


def make_provider(spec: ProviderSpec) -> Provider:
    if spec.kind == "scripted":
        return ScriptedModel()
    if spec.kind == "openai":
        from raygent.providers._openai import OpenAIChatProvider

        return OpenAIChatProvider(
            spec.model, base_url=spec.base_url, api_key=spec.api_key, headers=spec.headers or None
        )
    raise ValueError(f"unknown provider kind {spec.kind!r}; known: 'scripted', 'openai'")
