"""Secret redaction: API keys never reach logs, exception text or trajectories (RELIABILITY K1, K2).

`redact(text)` replaces what looks like a credential with `***`:
- the values of environment variables whose names end in `_KEY`, `_TOKEN`, `_SECRET` or `_PASSWORD` (read from
  `os.environ` at each call, so a key exported after import is still caught), and the `extra_secrets` a caller
  passes (a backend's own key);
- `Bearer <token>` (so an echoed `Authorization` header reads `Authorization: Bearer ***`), `Basic <token>`, and the
  value after `api-key`/`x-api-key`/`api_key`/`token`/`password`/`secret` followed by `:` or `=`;
- well-known key shapes: OpenAI/Anthropic `sk-...`, Hugging Face `hf_...`, GitHub `ghp_...`/`github_pat_...`,
  NVIDIA `nvapi-...`, AWS `AKIA...`, Google `AIza...`, Slack `xox?-...`;
- the user:password part of URLs (`https://user:pw@host` -> `https://***@host`).

`RedactingFilter` is a `logging.Filter` that applies `redact` to a record's formatted message and traceback; attach it
to a handler (handlers see every record that propagates to them; a logger's own filters do not).

Which values are secrets (K3: redaction never corrupts output): a value is masked wherever it appears only if it is
at least `MIN_SECRET_CHARS` (8) characters long and is not a placeholder that keyless local servers are customarily
given (`EMPTY`, `sk-no-key-required`, ...: `PLACEHOLDER_KEYS`). A shorter value cannot be told apart from ordinary
text ("x" is in every other word; masking it turns "expression" into "e***pression") and protects nothing, and a
placeholder is public by definition. Real provider keys are 20 to 200 characters.

Invariants: redaction is idempotent (`redact(redact(t)) == redact(t)`), never raises, and leaves text with nothing
secret-looking unchanged. It is a last line of defence: code should not put secrets into text in the first place
(backends read keys from the environment at call time and never store them).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

MASK = "***"
SECRET_ENV_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
MIN_SECRET_CHARS = 8
PLACEHOLDER_KEYS = frozenset({"empty", "none", "null", "dummy", "sk-no-key-required", "not-needed", "no-key",
                              "placeholder", "unused"})

_TOKEN_CHARS = r"[A-Za-z0-9._~+/=\-]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization schemes: keep the scheme so the reader sees what kind of credential was there.
    (re.compile(rf"\b(Bearer)(\s+){_TOKEN_CHARS}{{6,}}", re.IGNORECASE), rf"\1\2{MASK}"),
    # `Basic` is an ordinary English word: mask it only as an Authorization header value.
    (re.compile(rf"(Authorization[\"']?\s*[:=]\s*[\"']?Basic\s+){_TOKEN_CHARS}+", re.IGNORECASE), rf"\1{MASK}"),
    # `api-key: value`, `"api_key": "value"`, `token=value`: keep the name, mask the value.
    (
        re.compile(
            r"""(?P<name>\b(?:x-)?api[-_]?key|\b(?:access[-_]?|auth[-_]?)?token|\bpassword|\bsecret)"""
            r"""(?P<sep>["']?\s*[:=]\s*["']?)(?!Bearer\b|Basic\b|\*\*\*)(?P<value>[^\s"',;&}]{8,})""",
            re.IGNORECASE,
        ),
        rf"\g<name>\g<sep>{MASK}",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"), MASK),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), MASK),
    (re.compile(r"\b(?:ghp|gho|ghs|ghu)_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"), MASK),
    (re.compile(r"\bnvapi-[A-Za-z0-9_\-]{16,}"), MASK),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), MASK),
    (re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE), rf"\g<scheme>{MASK}@"),
)


def is_secret_value(value: str) -> bool:
    """May `value` be masked wherever it appears? Long enough to be a secret, and not a public placeholder."""
    return len(value) >= MIN_SECRET_CHARS and value.strip().lower() not in PLACEHOLDER_KEYS


def secret_env_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables, longest first (so a key containing another is masked whole)."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if name.upper().endswith(SECRET_ENV_SUFFIXES) and is_secret_value(value)
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, *, extra_secrets: tuple[str, ...] = ()) -> str:
    """`text` with every credential-looking string replaced by `***` (see the module docstring for what counts)."""
    if not text:
        return text
    for value in (*extra_secrets, *secret_env_values()):
        if value and is_secret_value(value) and value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of HTTP headers safe to log: credential headers masked (`Authorization: Bearer ***`), others redacted."""
    out = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in ("authorization", "proxy-authorization"):
            scheme, _, rest = value.partition(" ")
            out[name] = f"{scheme} {MASK}" if rest else MASK
        elif lowered in ("api-key", "x-api-key", "cookie", "set-cookie"):
            out[name] = MASK
        else:
            out[name] = redact(value)
    return out


class RedactingFilter(logging.Filter):
    """Redacts each record's message, arguments and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed %-format: keep the raw pieces, redacted
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(*handlers: logging.Handler) -> RedactingFilter:
    """Attach one `RedactingFilter` to `handlers` (default: the root logger's handlers); returns it."""
    flt = RedactingFilter()
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
