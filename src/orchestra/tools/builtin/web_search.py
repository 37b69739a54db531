"""web_search: search the web through Tavily (`POST /search`), optionally reading the top pages (`POST /extract`).

Key: read from the environment variable named by `api_key_env` (default `TAVILY_API_KEY`) at each call, sent only in
the request's `Authorization: Bearer` header, never stored on the tool. With no key set, a call is a `tool_error`
observation naming the variable (the episode goes on; `orchestra tool call` turns it into one line, since the tool
raises `ConfigError`, a setup mistake). Everything the service sends back, error bodies included, passes through
`orchestra.redact` with the key as an extra secret, so a server that echoes the key cannot put it into an observation,
a log line or a trajectory.

Cost: `usd_per_search` per search plus `usd_per_page` per page the service extracted (failed pages are not billed by
the service, and not charged here); a failed search (an HTTP error status) is not billed. The budget reserves the
worst case before the call: one search and `max_pages` pages. Defaults follow Tavily's pay-as-you-go price ($0.008
per credit; a basic search is one credit, a basic extraction one credit per five pages).

`base_url` is configurable (pool `options`), so tests run against a scripted server on 127.0.0.1.
"""

# No `from __future__ import annotations`: the argument bounds in `web_search`'s annotations are the factory's
# options, so they must be evaluated where the function is defined.
import os
from typing import Annotated, Any, Literal

import pydantic

from orchestra.errors import ConfigError
from orchestra.redact import redact
from orchestra.tools.spec import CostCard, Tool, ToolOutput, tool

try:
    import httpx2 as httpx
except ImportError:  # an older `openai` that still depends on plain httpx
    import httpx  # type: ignore[no-redef]

DEFAULT_BASE_URL = "https://api.tavily.com"
USD_PER_SEARCH = 0.008
USD_PER_PAGE = 0.0016
_ERROR_CHARS = 300


def web_search_tool(
    api_key_env: str = "TAVILY_API_KEY",
    base_url: str = DEFAULT_BASE_URL,
    usd_per_search: Annotated[float, pydantic.Field(ge=0)] = USD_PER_SEARCH,
    usd_per_page: Annotated[float, pydantic.Field(ge=0)] = USD_PER_PAGE,
    max_results: Annotated[int, pydantic.Field(ge=1, le=20)] = 10,
    max_pages: Annotated[int, pydantic.Field(ge=0, le=20)] = 3,
    search_depth: Literal["basic", "advanced"] = "basic",
    max_page_chars: Annotated[int, pydantic.Field(ge=100)] = 4_000,
    timeout_s: Annotated[float, pydantic.Field(gt=0)] = 30.0,
    latency_s: Annotated[float, pydantic.Field(ge=0)] = 2.0,
) -> Tool:
    """The tool; its options (all optional in a pool's `options:`) set the key's variable, endpoint, prices and
    limits. `max_results` and `max_pages` bound what one call may ask for (and so its worst-case cost)."""
    if not api_key_env.isidentifier() or redact(api_key_env) != api_key_env:
        raise ConfigError("api_key_env: must be the NAME of an environment variable holding the key, not the key")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base_url: {base_url!r} needs a scheme, e.g. {DEFAULT_BASE_URL}")
    root = base_url.rstrip("/")
    card = CostCard(usd_per_call=usd_per_search, latency_s=latency_s)

    async def web_search(
        query: Annotated[str, pydantic.Field(min_length=1, max_length=400)],
        results: Annotated[int, pydantic.Field(ge=1, le=max_results)] = min(5, max_results),
        read_pages: Annotated[int, pydantic.Field(ge=0, le=max_pages)] = 0,
    ) -> ToolOutput:
        """Search the web; returns the top results (title, URL, snippet), and the text of the first pages if asked.

        Args:
            query: what to search for, as a search-engine query
            results: how many results to return
            read_pages: how many of the top results to open and read in full (each page costs extra)
        """
        key = _key(api_key_env)
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s)) as client:
            found = await _post(client, f"{root}/search", key, {
                "query": query, "max_results": results, "search_depth": search_depth,
                "include_answer": False, "include_raw_content": False,
            })
            if isinstance(found, str):
                return ToolOutput(found, cost_usd=0.0, is_error=True)
            hits = [h for h in found.get("results") or [] if isinstance(h, dict)][:results]
            urls = [str(h.get("url")) for h in hits if h.get("url")][:read_pages]
            pages = await _post(client, f"{root}/extract", key, {"urls": urls}) if urls else {}
        text = _render(hits, pages, max_page_chars)
        extracted = 0 if isinstance(pages, str) else len(_pages(pages))
        return ToolOutput(redact(text, extra_secrets=(key,)),
                          cost_usd=usd_per_search + usd_per_page * extracted)

    def max_cost(_arguments: dict[str, Any]) -> float:
        return usd_per_search + usd_per_page * max_pages

    return tool(web_search, name="web_search", cost=card, kind="basic", timeout_s=timeout_s * 2 + 5.0,
                max_cost=max_cost)


def _key(env_name: str) -> str:
    key = os.environ.get(env_name, "")
    if not key:
        raise ConfigError(f"web_search needs a Tavily API key: set the environment variable {env_name}")
    return key


async def _post(client: httpx.AsyncClient, url: str, key: str, body: dict[str, Any]) -> dict[str, Any] | str:
    """The JSON object the service answered, or an error text for the model (already redacted)."""
    try:
        response = await client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        return _error(f"error: {url.rsplit('/', 1)[-1]} request failed: {type(exc).__name__}: {exc}", key)
    if response.status_code >= 400:
        return _error(f"error: {url.rsplit('/', 1)[-1]} answered HTTP {response.status_code}: {_detail(response)}", key)
    try:
        data = response.json()
    except ValueError:
        return _error(f"error: {url.rsplit('/', 1)[-1]} answered something that is not JSON", key)
    return data if isinstance(data, dict) else _error("error: the service answered a JSON value that is not an object",
                                                        key)


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:_ERROR_CHARS]
    detail = data.get("detail", data) if isinstance(data, dict) else data
    if isinstance(detail, dict):
        detail = detail.get("error", detail)
    return str(detail)[:_ERROR_CHARS]


def _error(message: str, key: str) -> str:
    return redact(message, extra_secrets=(key,))


def _pages(pages: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in pages.get("results") or [] if isinstance(p, dict) and p.get("raw_content")]


def _render(hits: list[dict[str, Any]], pages: dict[str, Any] | str, max_page_chars: int) -> str:
    """Numbered results, then each page read (capped at `max_page_chars`), then pages that could not be read."""
    if not hits:
        return "no results"
    lines = [f"{i}. {h.get('title') or '(untitled)'}\n   {h.get('url')}\n   {str(h.get('content') or '').strip()}"
             for i, h in enumerate(hits, 1)]
    if isinstance(pages, str):
        lines.append(f"(pages could not be read: {pages})")
        return "\n".join(lines)
    for page in _pages(pages):
        body = str(page["raw_content"])
        cut = f"\n[truncated: {len(body) - max_page_chars} more characters]" if len(body) > max_page_chars else ""
        lines.append(f"\n--- page {page.get('url')} ---\n{body[:max_page_chars]}{cut}")
    for failed in pages.get("failed_results") or []:
        if isinstance(failed, dict):
            lines.append(f"(could not read {failed.get('url')}: {failed.get('error')})")
    return "\n".join(lines)
