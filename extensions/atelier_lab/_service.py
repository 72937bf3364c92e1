"""One call to a hub service from a session, with the session's own hub token.

Rule this module keeps: the service's base URL comes from the session's settings (an
``ATELIER_..._URL`` variable) and its refusal is raised as the caller's error class with
the service's own message (which names the field and the fix); a service that does not
answer is reported with its address, never as a hang. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


def call(method: str, url: str, *, token: str, error: type[Exception], what: str, body: dict | None = None,
         timeout: float = 60) -> tuple[bytes, dict[str, str]]:
    """``method`` ``url`` as the token's user; the answer's body and headers (their names in
    lower case: the hub's proxy may send them so)."""
    import urllib.error
    import urllib.request  # here, not above: `import atelier_lab` stays cheap

    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (the deployment's own URL)
            return r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read() or b"{}").get("message")
        except ValueError:
            message = None
        raise error(message or f"the {what} answered {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise error(f"the {what} at {url.split('/api/', 1)[0]} did not answer ({exc}); "
                    "try again in a moment") from None


def base_url(env: Mapping[str, str], variable: str) -> tuple[str, str]:
    """The service's base URL (from ``variable``) and the session's hub token; either may be empty."""
    return env.get(variable, "").rstrip("/"), env.get("JUPYTERHUB_API_TOKEN", "")
