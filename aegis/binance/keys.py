"""API keys: loaded from the environment or an owner-only key file, held in a type that never shows itself.

The secret is a `Secret`: its repr/str are masked, it refuses pickling (so it cannot ride into a spawned process,
a journal record or a log line by accident) and the only way to use it is `.reveal()` at the one place that
computes an HMAC (aegis.binance.signing). The API key itself is not secret in the cryptographic sense but it identifies the
account, so it is masked the same way except for its last four characters.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

ENV_KEY = "BINANCE_API_KEY"
ENV_SECRET = "BINANCE_API_SECRET"
# what the embedded venue accepts unless configured otherwise (VENUE_INTERFACE.md)
EMBEDDED_KEY = "aegis-test-key"
EMBEDDED_SECRET = "aegis-test-secret"


class ApiKeyError(ValueError):
    """A user mistake with keys: reported as one line, exit code 2."""


class Secret:
    __slots__ = ("_value", "_shown")

    def __init__(self, value: str, shown: int = 0):
        if not isinstance(value, str) or not value:
            raise ApiKeyError("an API key or secret must be a non-empty string")
        self._value = value
        self._shown = shown  # trailing characters safe to show (0 for the secret)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        tail = self._value[-self._shown:] if self._shown else ""
        return f"Secret('***{tail}')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled (keys never leave the process that loaded them)")

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class ApiKeys:
    key: Secret
    secret: Secret

    def __repr__(self) -> str:
        return f"ApiKeys(key={self.key!r}, secret={self.secret!r})"


def from_strings(key: str, secret: str) -> ApiKeys:
    return ApiKeys(Secret(key.strip(), shown=4), Secret(secret.strip()))


def load_key_file(path: str) -> ApiKeys:
    """Two lines (key, then secret) or KEY=value lines using the environment variable names.

    Refused unless only the owner can read it: a group/world-readable file means the secret may already be exposed.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise ApiKeyError(f"cannot read key file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ApiKeyError(f"key file {path} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ApiKeyError(f"key file {path} is readable by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
                        f"run: chmod 600 {path}")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise ApiKeyError(f"cannot read key file {path}: {type(e).__name__}") from None
    named = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    if ENV_KEY in named and ENV_SECRET in named:
        return from_strings(named[ENV_KEY].strip().strip('"'), named[ENV_SECRET].strip().strip('"'))
    if len(lines) == 2 and not named:
        return from_strings(lines[0], lines[1])
    raise ApiKeyError(f"key file {path} must hold two lines (key, secret) or {ENV_KEY}=... and {ENV_SECRET}=...")


def load(venue: str = "embedded", key_file: str | None = None, environ=None) -> ApiKeys:
    """Keys for `venue`: the key file if given, else the environment; the embedded venue falls back to its
    well-known test keys (they only open a loopback simulator)."""
    env = os.environ if environ is None else environ
    if key_file:
        return load_key_file(key_file)
    k, s = env.get(ENV_KEY, ""), env.get(ENV_SECRET, "")
    if k and s:
        return from_strings(k, s)
    if k or s:
        raise ApiKeyError(f"set both {ENV_KEY} and {ENV_SECRET} (only one is set)")
    if venue == "embedded":
        return from_strings(EMBEDDED_KEY, EMBEDDED_SECRET)
    raise ApiKeyError(f"venue {venue} needs API keys: set {ENV_KEY} and {ENV_SECRET} or pass a 0600 key file")
