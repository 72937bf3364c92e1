"""Redaction of secrets in command lines, environment variables and URLs.

The rule this module keeps: anything that *might* carry a secret is replaced by
``REDACTED`` before it leaves the process. A false positive costs one re-typed argument
when a run is re-run; a false negative leaks a credential into a shared tracking server.
All functions are pure (no I/O) so the table of cases in the tests is the specification.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[REDACTED]"

# Words that mark a name as secret wherever they appear in it, also as the end of a
# compound word ("hftoken", "oauth", "clientsecret").
_STRONG = (
    "token",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "credential",
    "credentials",
    "apikey",
    "auth",
    "authorization",
    "privatekey",
    "accesskey",
    "secretkey",
)
# Words that mark a name as secret only as its last word: "api_key", "ssh-key" and
# "--key" are secrets, "num_key_value_heads" and "key_dim" are not.
_WEAK_LAST = frozenset({"key", "pwd", "pass", "cookie", "sig", "signature", "sas", "dsn"})

# Splits "hf-token", "db.password", "apiKey", "AWS_SECRET_ACCESS_KEY" into words.
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

# Well-known token formats, redacted wherever they appear, whatever the option name.
_TOKEN_PATTERNS = re.compile(
    r"""
    \b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})  # GitHub
    | \bglpat-[A-Za-z0-9_\-]{20,}                                   # GitLab
    | \bhf_[A-Za-z0-9]{30,}                                         # Hugging Face
    | \bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}                       # OpenAI, Anthropic
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                                 # AWS access key id
    | \bxox[abprs]-[A-Za-z0-9\-]{10,}                               # Slack
    | \beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+  # JWT
    """,
    re.VERBOSE,
)
# scheme://user:password@host or scheme://token@host, anywhere in a string.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/@\s]+)@")
# "NAME=VALUE" with NAME like an identifier or dotted path (Hydra: "+db.password=x").
_ASSIGNMENT = re.compile(
    r"^(?P<prefix>[+~]{0,2})(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)=(?P<value>.*)$", re.S
)
# Query parameters that carry credentials in pre-signed or SAS URLs.
_SECRET_QUERY_PARAMS = frozenset(
    {"sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token"}
)


def is_secret_name(name: str) -> bool:
    """Whether an option, variable or key name looks like it holds a secret.

    >>> is_secret_name("--hf-token"), is_secret_name("--max-new-tokens")
    (True, False)
    """
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if not words:
        return False
    for word in words:
        if any(word == s or word.endswith(s) for s in _STRONG):
            return True
    return words[-1] in _WEAK_LAST


def redact_value(value: str) -> str:
    """Remove credentials embedded in a free-form value (URLs, well-known token formats).

    >>> redact_value("postgresql://bob:hunter2@db/x")
    'postgresql://[REDACTED]@db/x'
    """
    if "://" in value:
        value = _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", value)
        value = _redact_query(value)
    return _TOKEN_PATTERNS.sub(REDACTED, value)


def _redact_query(value: str) -> str:
    """Redact secret-looking query parameters of a value that is a URL."""
    if "?" not in value or any(c.isspace() for c in value):
        return value
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if not parts.query:
        return value
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    changed = False
    for i, (k, _) in enumerate(pairs):
        if is_secret_name(k) or k.lower() in _SECRET_QUERY_PARAMS:
            pairs[i] = (k, REDACTED)
            changed = True
    if not changed:
        return value
    return urlunsplit(parts._replace(query=urlencode(pairs, safe="[]")))


def redact_argv(argv: Iterable[str]) -> list[str]:
    """Redact secrets in a command line.

    Handles ``--token X``, ``--token=X``, ``-token X``, ``NAME=VALUE`` (also Hydra's
    ``+db.password=X``), credentials in URLs and well-known token formats.

    >>> redact_argv(["train.py", "--lr", "0.1", "--api-key", "abc", "db.password=xyz"])
    ['train.py', '--lr', '0.1', '--api-key', '[REDACTED]', 'db.password=[REDACTED]']
    """
    out: list[str] = []
    redact_next = False
    for arg in argv:
        if redact_next:
            redact_next = False
            # A following long option means the secret-looking option was a flag.
            if not arg.startswith("--"):
                out.append(REDACTED)
                continue
        if arg.startswith("-") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            if is_secret_name(name.lstrip("-")):
                if eq:
                    out.append(f"{name}={REDACTED}")
                else:
                    out.append(arg)
                    redact_next = True
                continue
            out.append(f"{name}={redact_value(value)}" if eq else redact_value(arg))
            continue
        match = _ASSIGNMENT.match(arg)
        if match and is_secret_name(match.group("name")):
            out.append(f"{match.group('prefix')}{match.group('name')}={REDACTED}")
            continue
        out.append(redact_value(arg))
    return out


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Redact secret-looking environment variables (by name, then by value).

    >>> redact_env({"ATELIER_PROFILE": "gpu-1", "ATELIER_API_TOKEN": "abc"})
    {'ATELIER_PROFILE': 'gpu-1', 'ATELIER_API_TOKEN': '[REDACTED]'}
    """
    return {k: REDACTED if is_secret_name(k) else redact_value(v) for k, v in env.items()}


def strip_url_credentials(url: str) -> str:
    """Drop credentials from a (git remote) URL so it is safe to record.

    HTTP(S) and other ``scheme://`` URLs lose their whole userinfo (a lone "user" there is
    often a token); ``ssh://git@host`` keeps a user name but loses a password;
    scp-like ``git@host:org/repo.git`` has no credentials and is kept as is.

    >>> strip_url_credentials("https://x-access-token:abc@github.com/org/repo.git")
    'https://github.com/org/repo.git'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_value(url)
    if not parts.scheme or "@" not in parts.netloc or len(parts.scheme) == 1:
        # scp-like syntax or a Windows path: nothing that urlsplit understands as userinfo.
        return redact_value(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme in ("ssh", "git+ssh", "ssh+git") and ":" not in userinfo:
        netloc = parts.netloc
    else:
        netloc = hostport
    url = urlunsplit(parts._replace(netloc=netloc))
    return _TOKEN_PATTERNS.sub(REDACTED, _redact_query(url))
