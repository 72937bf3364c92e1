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
_WEAK_LAST = frozenset({"key", "pwd", "pass", "cookie", "sig", "signature", "sas", "dsn",
                        # abbreviations of password and token
                        "pw", "passw", "pword", "pswd", "psw", "tok", "tkn"})
# Short options whose value is a secret: -p PASSWORD (mysql, sshpass, docker login; a
# number is a port and stays), -u USER:PASSWORD (curl: only the part after ":" goes).
_SHORT_SECRET = frozenset({"-p"})
_SHORT_USERPASS = frozenset({"-u", "--user"})

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
# scheme://user:password@host or scheme://token@host, anywhere in a string; the userinfo
# runs to the *last* "@" before the path, as a password may contain "@".
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s]+)@")
# user:password@host without a scheme (libpq-style, pasted DSNs); an e-mail address has no
# ":" before the "@" and an scp-like git remote none either.
_BARE_USERINFO = re.compile(
    r"(?:^|(?<=[\s=,;]))[A-Za-z0-9._%+\-]+:(?!//)[^\s]*@(?P<host>[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)"
    r"(?=[:/?#\s]|$)"
)
# "Name: value" headers whose name is secret (Authorization, X-Api-Key, Cookie).
_HEADER = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9\-]*):\s*(?P<value>\S.*)$", re.S)
# HTTP auth schemes followed by credentials, anywhere.
_AUTH_SCHEME = re.compile(r"\b(?P<scheme>Bearer|Basic|Token|Digest)\s+[A-Za-z0-9._~+/=\-]{6,}")
# name=value inside a longer value: --set a=1,db.password=x; connection strings
# (Server=h;Password=x); query-like a=1&token=x.
_INLINE_ASSIGNMENT = re.compile(
    r"(?P<lead>^|[,;&\s])(?P<name>[A-Za-z_][A-Za-z0-9_.\- ]*?)\s*=\s*(?P<value>[^,;&\s]*)"
)
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
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        redacted = _redact_json(stripped)
        if redacted is not None:
            return redacted
    if "://" in value:
        value = _URL_USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", value)
        value = _redact_query(value)
    if "@" in value and ":" in value:
        value = _BARE_USERINFO.sub(lambda m: f"{REDACTED}@{m.group('host')}", value)
    header = _HEADER.match(value)
    if header and is_secret_name(header.group("name")):
        return f"{header.group('name')}: {REDACTED}"
    value = _AUTH_SCHEME.sub(lambda m: f"{m.group('scheme')} {REDACTED}", value)
    if "=" in value:
        value = _INLINE_ASSIGNMENT.sub(
            lambda m: (f"{m.group('lead')}{m.group('name')}={REDACTED}"
                       if is_secret_name(m.group("name").strip()) and m.group("value")
                       else m.group(0)),
            value,
        )
    return _TOKEN_PATTERNS.sub(REDACTED, value)


def _redact_json(text: str) -> str | None:
    """A JSON argument with secret-named keys and secret-looking strings redacted, or None
    when ``text`` is not JSON. Unchanged JSON is returned as typed."""
    import json

    try:
        data = json.loads(text)
    except ValueError:
        return None

    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {k: REDACTED if is_secret_name(str(k)) and node[k] not in (None, "")
                    else walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        if isinstance(node, str):
            return redact_value(node)
        return node

    cleaned = walk(data)
    return text if cleaned == data else json.dumps(cleaned)


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
    previous = ""
    for arg in argv:
        before, previous = previous, arg
        if redact_next:
            redact_next = False
            # A following long option means the secret-looking option was a flag.
            if not arg.startswith("--"):
                out.append(REDACTED)
                continue
        if before in _SHORT_SECRET and not arg.startswith("-") and not arg.isdigit():
            out.append(REDACTED)
            continue
        if arg[:2] in _SHORT_SECRET and len(arg) > 2 and not arg[2:].isdigit():
            out.append(f"{arg[:2]}{REDACTED}")  # -pVALUE (mysql's spelling)
            continue
        if before in _SHORT_USERPASS and ":" in arg and "://" not in arg:
            user = arg.split(":", 1)[0]
            out.append(f"{user}:{REDACTED}")
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


def redact_options(argv: Iterable[str], options: Iterable[str]) -> list[str]:
    """Redact the values of the given ``options`` (the spellings a program's parser gives
    its secret parameters, e.g. ``-k`` for ``--api-key``) wherever a command line has
    them: ``-k X``, ``-kX``, ``--api-key=X``.

    >>> redact_options(["-k", "abc", "-kabc", "--api-key=abc", "--lr", "1"], ["-k", "--api-key"])
    ['-k', '[REDACTED]', '-k[REDACTED]', '--api-key=[REDACTED]', '--lr', '1']
    """
    opts = set(options)
    out: list[str] = []
    redact_next = False
    for arg in argv:
        if redact_next:
            redact_next = False
            if not arg.startswith("-") or arg[1:2].isdigit():
                out.append(REDACTED)
                continue
        if arg in opts:
            out.append(arg)
            redact_next = True
        elif "=" in arg and arg.split("=", 1)[0] in opts and arg.startswith("--"):
            out.append(arg.split("=", 1)[0] + "=" + REDACTED)
        elif arg[:2] in opts and len(arg) > 2 and not arg.startswith("--"):
            out.append(arg[:2] + REDACTED)
        else:
            out.append(arg)
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


# -- secret scanning of file content (the uncommitted diff, untracked files) -----------

# key = value / key: value / "key": "value" / export KEY=value, one per match.
_CONTENT_ASSIGNMENT = re.compile(
    r"""(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)["']?\s*(?::=|=>|[:=])\s*"""
    r"""(?:(?P<q>["'`])(?P<quoted>[^"'`\n]{4,})(?P=q)|(?P<bare>[^\s"'`,;#}\]]{6,}))"""
)
# The same inside a JSON string (a notebook's cell source in a diff or a saved file):
# `"API_KEY = \"value\"\n",`, the quotes escaped. (`bare` never matches: one handler.)
_ESCAPED_ASSIGNMENT = re.compile(
    r"""(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?:\\["'])?\s*(?::=|=>|[:=])\s*"""
    r"""(?:\\(?P<q>")(?P<quoted>[^"'`\\\n]{4,})\\(?P=q)|(?P<bare>(?!x)x))"""
)
_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$|[()\[\]]|^[${<%]")
_PLACEHOLDERS = frozenset({"none", "null", "true", "false", "required", "optional", "changeme",
                           "redacted", "xxxxxx", "******"})


def entropy(text: str) -> float:
    """Shannon entropy in bits per character.

    >>> round(entropy("aaaa"), 2), round(entropy("abcd"), 2)
    (0.0, 2.0)
    """
    import math
    from collections import Counter

    if not text:
        return 0.0
    n = len(text)
    return max(0.0, -sum(c / n * math.log2(c / n) for c in Counter(text).values()))


def _secret_literal(value: str, *, quoted: bool) -> bool:
    """Whether a value assigned to a secret-named key looks like a real secret: long
    enough, not a reference to a variable or a call (unquoted), not a placeholder, and
    varied (entropy at least 2.5 bits per character: "hunter2" is, "xxxxxxxx" is not)."""
    if REDACTED in value or value.lower() in _PLACEHOLDERS:
        return False
    if not quoted and _REFERENCE.search(value):
        return False
    return entropy(value) >= 2.5


def scan_line(line: str) -> tuple[str, int]:
    """A line of file content with known token formats, URL credentials and secret
    literals assigned to secret-named keys replaced by ``REDACTED``; and how many.

    >>> scan_line('API_KEY = "Zq8vL1pX0rT5"')
    ('API_KEY = "[REDACTED]"', 1)
    >>> scan_line("token = get_token()")
    ('token = get_token()', 0)
    >>> scan_line('    "API_KEY = \\\\"Zq8vL1pX0rT5\\\\"\\\\n",')
    ('    "API_KEY = \\\\"[REDACTED]\\\\"\\\\n",', 1)
    """
    count = 0

    def assignment(m: re.Match[str]) -> str:
        nonlocal count
        quoted = m.group("quoted")
        value = quoted if quoted is not None else m.group("bare")
        if not is_secret_name(m.group("key")) or not _secret_literal(
                value, quoted=quoted is not None):
            return m.group(0)
        count += 1
        start = m.start("quoted" if quoted is not None else "bare") - m.start()
        end = m.end("quoted" if quoted is not None else "bare") - m.start()
        text = m.group(0)
        return text[:start] + REDACTED + text[end:]

    line = _CONTENT_ASSIGNMENT.sub(assignment, line)
    if '\\"' in line:
        line = _ESCAPED_ASSIGNMENT.sub(assignment, line)
    line, n = _TOKEN_PATTERNS.subn(REDACTED, line)
    count += n
    if "://" in line:
        def url(m: re.Match[str]) -> str:
            nonlocal count
            if m.group("userinfo") == REDACTED:
                return m.group(0)
            count += 1
            return m.group("scheme") + REDACTED + "@"

        line = _URL_USERINFO.sub(url, line)
    return line, count


def scan_diff(diff: bytes) -> tuple[bytes, int]:
    """Scan the added lines of a ``git diff`` (only those: context and removed lines are
    in the commit already, and changing them would stop the diff from applying); returns
    (diff, number of secrets replaced). Bytes that are not UTF-8 pass through unchanged.

    >>> scan_diff(b"+++ b/cfg.py\\n+password = 'Zq8vL1pX0rT5'\\n")
    (b"+++ b/cfg.py\\n+password = '[REDACTED]'\\n", 1)
    """
    if not diff:
        return diff, 0
    out: list[bytes] = []
    total = 0
    for raw in diff.splitlines(keepends=True):
        if raw.startswith(b"+") and not raw.startswith(b"+++ "):
            text = raw.decode("utf-8", "surrogateescape")
            cleaned, n = scan_line(text)
            if n:
                total += n
                raw = cleaned.encode("utf-8", "surrogateescape")
        out.append(raw)
    return b"".join(out), total


def scan_content(content: bytes) -> tuple[bytes, int]:
    """Scan every line of a file's content; see :func:`scan_line`.

    >>> scan_content(b"HF_TOKEN=hf_" + b"a" * 34 + b"\\n")
    (b'HF_TOKEN=[REDACTED]\\n', 1)
    """
    out: list[bytes] = []
    total = 0
    for raw in content.splitlines(keepends=True):
        text = raw.decode("utf-8", "surrogateescape")
        cleaned, n = scan_line(text)
        total += n
        out.append(cleaned.encode("utf-8", "surrogateescape") if n else raw)
    return b"".join(out), total
