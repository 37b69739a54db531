"""API keys with per-key budgets, checked before any route runs.

Keys come from `--api-keys-file` (one key per line, optionally followed by that key's dollar budget; `#` starts a
comment) and from `ORCHESTRA_API_KEYS` (comma-separated keys). No key configured means the server is open, and the
command then refuses to bind anything but 127.0.0.1 (RELIABILITY V10).

Invariants
- A key is never stored in the clear past loading, never logged, never written to a trajectory: the ring keeps the
  SHA-256 of each key, and an account is known by a short hash prefix (`key:1a2b3c4d`).
- Every request, on every route, is checked (V1): no key or a wrong one is a 401 in the OpenAI error shape, and the
  message does not repeat what was sent.
- Each account owns one `Budget` shared by all its concurrent episodes, so a key's spend never passes its budget
  (reservations, as for any run-wide budget; V3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError
from orchestra.rollout.budget import Budget
from orchestra.serve.schema import error_body

log = logging.getLogger("orchestra.serve")

KEYS_ENV = "ORCHESTRA_API_KEYS"


@dataclass(frozen=True)
class Account:
    """Who is calling: `id` is safe to log (a hash prefix, or `open` when no keys are configured)."""

    id: str
    budget: Budget


OPEN = Account("open", Budget(math.inf))


class KeyRing:
    """Accounts by the SHA-256 of their key."""

    def __init__(self, budgets: dict[str, float | None], default_budget_usd: float | None = None):
        self._accounts: dict[bytes, Account] = {}
        for key, budget in budgets.items():
            digest = hashlib.sha256(key.encode()).digest()
            limit = budget if budget is not None else default_budget_usd
            self._accounts[digest] = Account(f"key:{digest.hex()[:8]}", Budget(math.inf if limit is None else limit))

    @property
    def open(self) -> bool:
        return not self._accounts

    def __len__(self) -> int:
        return len(self._accounts)

    def account(self, presented: str | None) -> Account | None:
        if self.open:
            return OPEN
        if not presented:
            return None
        return self._accounts.get(hashlib.sha256(presented.encode()).digest())

    @classmethod
    def load(cls, path: Path | None, env_value: str | None = None,
             default_budget_usd: float | None = None) -> KeyRing:
        """Keys from the file and from `ORCHESTRA_API_KEYS` (`env_value`, read from the environment when None)."""
        budgets: dict[str, float | None] = {}
        if path is not None:
            budgets.update(_read_keys_file(path))
        raw = os.environ.get(KEYS_ENV, "") if env_value is None else env_value
        for key in (k.strip() for k in raw.split(",")):
            if key:
                budgets.setdefault(key, None)
        return cls(budgets, default_budget_usd)


def _read_keys_file(path: Path) -> dict[str, float | None]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"--api-keys-file {path}: unreadable ({exc.strerror})") from None
    out: dict[str, float | None] = {}
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ConfigError(f"--api-keys-file {path}:{number}: expected `KEY [BUDGET_USD]`")
        budget = None
        if len(fields) == 2:
            try:
                budget = float(fields[1])
            except ValueError:
                raise ConfigError(f"--api-keys-file {path}:{number}: budget must be a number of dollars") from None
            if budget < 0 or not math.isfinite(budget):
                raise ConfigError(f"--api-keys-file {path}:{number}: budget must be >= 0")
        out[fields[0]] = budget
    return out


class AuthMiddleware:
    """ASGI middleware: resolves the caller's account (`scope["state"]["account"]`) or answers 401."""

    def __init__(self, app: Any, keys: KeyRing):
        self.app = app
        self.keys = keys

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        account = self.keys.account(_bearer(scope))
        if account is None:
            log.info("401 %s %s: missing or invalid API key", scope["method"], scope["path"])
            await send_json(send, 401, error_body("Invalid or missing API key (send `Authorization: Bearer KEY`).",
                                                  "invalid_request_error", "invalid_api_key"))
            return
        scope.setdefault("state", {})["account"] = account
        await self.app(scope, receive, send)


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


async def send_json(send: Any, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    """A complete JSON response from inside middleware (before any route ran)."""
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
