"""Which provider an agent uses, as plain data that can cross Ray, and how to build it.

Kinds and their environment (each read when the spec is resolved, on the driver):

=====================  ==========================================  =============================================
kind                   key                                         base URL (default)
=====================  ==========================================  =============================================
``scripted``           --                                          -- (offline)
``openai``             ``OPENAI_API_KEY``                          ``OPENAI_BASE_URL`` (``https://api.openai.com/v1``)
``openai-responses``   ``OPENAI_API_KEY``                          ``OPENAI_BASE_URL`` (``https://api.openai.com/v1``)
``anthropic``          ``ANTHROPIC_API_KEY``                       ``ANTHROPIC_BASE_URL`` (``https://api.anthropic.com``)
``gemini``             ``GEMINI_API_KEY``, else ``GOOGLE_API_KEY``  ``GEMINI_BASE_URL``
                                                                   (``https://generativelanguage.googleapis.com/v1beta``)
=====================  ==========================================  =============================================

``trajectory`` (offline, ``raygent replay``) plays the assistant turns of a recorded trajectory:
``model`` is the trajectory file's path, read by the actor that builds the provider
(:class:`~raygent.providers._trajectory.TrajectoryModel`).
"""

from __future__ import annotations

import os

import msgspec

from raygent.providers._base import Provider
from raygent.providers._ratelimit import RateLimits
from raygent.providers._scripted import ScriptedModel

__all__ = ["ProviderSpec", "make_provider", "resolve_provider", "KINDS"]

KINDS = ("scripted", "openai", "openai-responses", "anthropic", "gemini", "trajectory")

# kind -> (API key variables in order of preference, base URL variable)
_ENV: dict[str, tuple[tuple[str, ...], str]] = {
    "openai": (("OPENAI_API_KEY",), "OPENAI_BASE_URL"),
    "openai-responses": (("OPENAI_API_KEY",), "OPENAI_BASE_URL"),
    "anthropic": (("ANTHROPIC_API_KEY",), "ANTHROPIC_BASE_URL"),
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"), "GEMINI_BASE_URL"),
}


class ProviderSpec(msgspec.Struct, frozen=True):
    """A provider as data: ``kind`` (one of :data:`KINDS`), model, endpoint and headers.

    ``kind`` is ``"scripted"`` (offline), ``"openai"`` (any OpenAI-compatible Chat Completions
    endpoint), ``"openai-responses"``, ``"anthropic"`` or ``"gemini"``. ``base_url`` None means
    the provider's default; ``headers`` are added to every request.
    """

    kind: str
    model: str = ""
    base_url: str | None = None
    api_key: str | None = None
    headers: dict[str, str] = {}
    # Shared by every actor of the cluster using this endpoint (raygent.providers._ratelimit).
    rate_limits: RateLimits | None = None

    @property
    def display_name(self) -> str:
        if self.kind == "scripted":
            return ScriptedModel.name
        return f"{self.kind}:{self.model}" + (f" @ {self.base_url}" if self.base_url else "")


def _split_kind(model: str | None) -> tuple[str | None, str | None]:
    # "anthropic:claude-sonnet-4-5" -> ("anthropic", "claude-sonnet-4-5"). Only a known kind is a
    # prefix: "llama3:8b" (an Ollama tag) stays a model name.
    if model:
        prefix, sep, rest = model.partition(":")
        if sep and prefix in KINDS and prefix != "scripted":
            return prefix, rest
    return None, model


def resolve_provider(
    model: str | None = None,
    *,
    provider: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> ProviderSpec:
    """Pick the provider from the arguments, then the environment.

    Parameters
    ----------
    model : str, optional
        The model name, optionally prefixed by its kind: ``"anthropic:claude-sonnet-4-5"``,
        ``"gemini:gemini-2.5-flash"``, ``"openai-responses:gpt-5"``, ``"openai:gpt-4o"``; only
        a kind of :data:`KINDS` counts as a prefix (``"llama3:8b"`` is a model name).
        ``"scripted"`` gives the offline model. Default: ``$RAYGENT_MODEL``.
    provider : str, optional
        The kind, when not given as a prefix of ``model``.
    base_url, api_key : str, optional
        The endpoint and key; default from the kind's environment variables (module docstring).
    headers : dict, optional
        Extra request headers.

    Returns
    -------
    ProviderSpec

    Notes
    -----
    Without a kind (no ``provider``, no prefix) the behaviour is the original one: the
    offline scripted model unless ``base_url``, ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` is
    set, in which case an OpenAI-compatible Chat Completions endpoint (``kind="openai"``).

    Raises
    ------
    ValueError
        An unknown ``provider``, a prefix that disagrees with ``provider``, or an endpoint
        configured without a model name.
    """
    prefixed, model = _split_kind(model or os.environ.get("RAYGENT_MODEL"))
    if provider is not None and provider not in KINDS:
        raise ValueError(f"unknown provider {provider!r}; known: {', '.join(KINDS)}")
    if prefixed and provider and prefixed != provider:
        raise ValueError(f"model {prefixed}:{model} disagrees with provider={provider!r}")
    kind = prefixed or provider
    if model == "scripted" or kind == "scripted":
        return ProviderSpec(kind="scripted")
    if kind == "trajectory":
        if not model:
            raise ValueError("a trajectory provider needs the trajectory file: model='trajectory:PATH'")
        return ProviderSpec(kind="trajectory", model=model)
    if kind is None:
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if model is None and base_url is None and not api_key:
            return ProviderSpec(kind="scripted")
        kind = "openai"
    else:
        key_vars, url_var = _ENV[kind]
        base_url = base_url or os.environ.get(url_var) or None
        if api_key is None:
            api_key = next((os.environ[v] for v in key_vars if os.environ.get(v)), None)
    if not model:
        raise ValueError(
            f"a {kind} endpoint is configured but no model is named: "
            "pass model=... (CLI: --model) or set RAYGENT_MODEL"
        )
    return ProviderSpec(kind=kind, model=model, base_url=base_url, api_key=api_key, headers=dict(headers or {}))


def make_provider(spec: ProviderSpec) -> Provider:
    """Build the provider a spec describes (on the actor that will use it).

    Raises
    ------
    ValueError
        An unknown ``spec.kind``.
    """
    provider = _make(spec)
    if spec.rate_limits is not None:
        provider.rate_limits = spec.rate_limits  # type: ignore[attr-defined]
    return provider


def _make(spec: ProviderSpec) -> Provider:
    if spec.kind == "scripted":
        return ScriptedModel()
    if spec.kind == "trajectory":
        from raygent.providers._trajectory import TrajectoryModel

        return TrajectoryModel.from_path(spec.model)
    url, key, headers = spec.base_url, spec.api_key, spec.headers or None
    if spec.kind == "openai":
        from raygent.providers._openai import OpenAIChatProvider

        return OpenAIChatProvider(spec.model, base_url=url, api_key=key, headers=headers)
    if spec.kind == "openai-responses":
        from raygent.providers._responses import OpenAIResponsesProvider

        return OpenAIResponsesProvider(spec.model, base_url=url, api_key=key, headers=headers)
    if spec.kind == "anthropic":
        from raygent.providers._anthropic import AnthropicProvider

        return AnthropicProvider(spec.model, base_url=url, api_key=key, headers=headers)
    if spec.kind == "gemini":
        from raygent.providers._gemini import GeminiProvider

        return GeminiProvider(spec.model, base_url=url, api_key=key, headers=headers)
    raise ValueError(f"unknown provider kind {spec.kind!r}; known: {', '.join(repr(k) for k in KINDS)}")
