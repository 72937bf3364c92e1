"""When an idle server is stopped: the culler's decision, as a pure function.

Rule this module keeps: one function, :func:`decide`, turns what is known about a
server (when it started, the hub's last activity, the session's latest activity report,
an Extend click) and its profile's culling settings into one :class:`Decision` with a
reason a person can read. The culler service (:mod:`atelier_hub.services.culler_server`)
only gathers those facts and acts; the session side (``atelier_lab._activity``) only
reports them. A report older than ``stale_after`` is ignored (a session that stopped
reporting does not keep itself alive).

Activity signals a session reports, by name (``atelier_lab._activity.SIGNALS``):
``kernel-busy``, ``terminal``, ``ssh``, ``gpu``. Any of them active in a fresh report
keeps the server alive; otherwise the newest of the session's own last activity (work:
kernel messages, terminal I/O, saves; not API polling) and the last Extend counts, or,
with no fresh report, the hub's last activity; the server stops ``idle_timeout`` seconds
after it. ``max_age`` stops a server whatever its activity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["Policy", "Report", "Decision", "decide"]


@dataclass(frozen=True)
class Policy:
    """A profile's culling settings, in seconds (``max_age`` None: no limit)."""

    idle_timeout: int
    max_age: int | None = None
    warn_before: int = 0


@dataclass(frozen=True)
class Report:
    """What a session said about itself at ``time``."""

    time: datetime
    #: jupyter-server's own last activity (API calls, kernel messages, terminals, signals)
    last_activity: datetime | None = None
    #: signal name -> human detail, for the signals active at ``time``
    active: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    action: str  # "keep" or "cull"
    reason: str
    #: the signal that kept the server alive, or None
    signal: str | None
    #: when the server will be stopped if nothing happens
    cull_at: datetime
    #: whether the session should show its warning now
    warn: bool


def _span(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def decide(*, now: datetime, policy: Policy, started: datetime, hub_last_activity: datetime | None,
           report: Report | None = None, extended_at: datetime | None = None,
           stale_after: float = 180) -> Decision:
    """Whether to stop a server now, and why.

    >>> t0 = datetime(2026, 1, 1, 12, 0)
    >>> p = Policy(idle_timeout=600, warn_before=120)
    >>> decide(now=t0 + timedelta(seconds=700), policy=p, started=t0, hub_last_activity=t0).action
    'cull'
    >>> busy = Report(time=t0 + timedelta(seconds=690), active={"kernel-busy": "1 kernel busy"})
    >>> d = decide(now=t0 + timedelta(seconds=700), policy=p, started=t0, hub_last_activity=t0, report=busy)
    >>> d.action, d.signal
    ('keep', 'kernel-busy')
    >>> decide(now=t0 + timedelta(seconds=500), policy=p, started=t0, hub_last_activity=t0).warn
    True
    """
    age_limit = started + timedelta(seconds=policy.max_age) if policy.max_age else None
    fresh = report is not None and (now - report.time).total_seconds() <= stale_after
    if age_limit is not None and now >= age_limit:
        return Decision("cull", f"reached its profile's max_age ({_span(policy.max_age)})", None, age_limit, True)
    if fresh and report.active:
        name = sorted(report.active)[0]
        cull_at = now + timedelta(seconds=policy.idle_timeout)
        if age_limit is not None:
            cull_at = min(cull_at, age_limit)
        details = "; ".join(f"{k}: {v}" for k, v in sorted(report.active.items()))
        return Decision("keep", f"kept alive by {details}", name, cull_at,
                        (cull_at - now).total_seconds() <= policy.warn_before)
    candidates = [("start", started)]
    if fresh and report.last_activity is not None:
        # The session's own account wins over the hub's: the hub counts every proxied
        # request, so an open but idle JupyterLab tab would keep the server alive forever.
        candidates.append(("session activity", report.last_activity))
    elif hub_last_activity is not None:
        candidates.append(("hub activity", hub_last_activity))
    if extended_at is not None:
        candidates.append(("Extend", extended_at))
    source, last = max(candidates, key=lambda c: c[1])
    cull_at = last + timedelta(seconds=policy.idle_timeout)
    if age_limit is not None:
        cull_at = min(cull_at, age_limit)
    idle = (now - last).total_seconds()
    quiet = "no busy kernel, terminal, SSH connection or GPU use"
    if not fresh:
        quiet = "no activity report from the session"
    if now >= cull_at:
        return Decision("cull", f"idle for {_span(idle)} (last: {source}; {quiet}), past its profile's "
                        f"idle_timeout of {_span(policy.idle_timeout)}", None, cull_at, True)
    left = (cull_at - now).total_seconds()
    return Decision("keep", f"active {_span(idle)} ago ({source}); stops in {_span(left)}", None, cull_at,
                    left <= policy.warn_before)
