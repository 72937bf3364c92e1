"""Profiles: one YAML file per profile in ``profiles/``, validated once.

Rule this module keeps: a profile is loaded and validated here and nowhere else, and
the renderers below are pure functions (no I/O) from a validated :class:`Profile` to
what a spawner needs. Every error names the file, the field and the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .schema import StrictModel, parse_problem

__all__ = [
    "Culling",
    "Price",
    "Profile",
    "ProfileError",
    "load_profiles",
    "parse_memory",
    "format_memory",
    "to_kubespawner",
    "to_embedded",
    "visible_profiles",
    "resolve_profile",
]

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40,
}
# Profile names become server-option values, env values and Kubernetes label values.
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class ProfileError(ValueError):
    """A profile file (or a request for a profile) is invalid; the message says how to fix it."""


def parse_memory(value: int | float | str) -> int:
    """Bytes from ``4G``, ``512Mi``, ``1.5G`` or a plain number of bytes.

    >>> parse_memory("4G"), parse_memory("1Gi"), parse_memory(1024)
    (4000000000, 1073741824, 1024)
    """
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4G or 512Mi, not a boolean")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = _MEMORY_RE.match(str(value))
        if not match:
            if str(value).strip().startswith("-"):
                raise ValueError(f"must not be negative (got {value!r})")
            raise ValueError(f"expected a size such as 4G or 512Mi (got {value!r})")
        number = float(match.group(1)) * _UNITS[(match.group(2) or "").upper()]
    if number < 0:
        raise ValueError(f"must not be negative (got {value!r})")
    return int(number)


def format_memory(n_bytes: int) -> str:
    """Human form of a byte count, the way profiles write it.

    >>> format_memory(4 * 10**9), format_memory(2**30), format_memory(1500 * 10**6)
    ('4G', '1Gi', '1.5G')
    """
    for suffix, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20)):
        if n_bytes >= size and n_bytes % size == 0:
            return f"{n_bytes // size}{suffix}"
    for suffix, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n_bytes >= size:
            return f"{n_bytes / size:g}{suffix}"
    return str(n_bytes)


class CPU(StrictModel):
    """CPU cores: ``guarantee`` is reserved for the session, ``limit`` is its ceiling."""

    guarantee: float | None = Field(None, gt=0, description="Cores reserved for the session (a cluster's CPU "
                                    "request); null: none reserved.")
    limit: float = Field(gt=0, description="Cores the session may use at most; also, in whole cores and capped "
                         "by the machine's cores in embedded mode, its thread count (`OMP_NUM_THREADS` and "
                         "friends), Spark's `local[N]` and Ray's CPUs.")

    @model_validator(mode="after")
    def _limit_above_guarantee(self) -> CPU:
        if self.guarantee is not None and self.limit < self.guarantee:
            raise ValueError(
                f"cpu.limit ({self.limit:g}) is below cpu.guarantee ({self.guarantee:g}); "
                "raise the limit or lower the guarantee"
            )
        return self


class Memory(StrictModel):
    """Memory in bytes; written in files as ``4G``, ``512Mi`` or a number of bytes."""

    guarantee: int | None = Field(None, description="Memory reserved for the session, e.g. `8G`; null: none.")
    limit: int = Field(description="Memory the session may use at most, e.g. `16G` or `512Mi` (its cgroup or "
                       "pod limit; past it the kernel is killed).")

    @field_validator("guarantee", "limit", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> int | None:
        return None if value is None else parse_memory(value)

    @model_validator(mode="after")
    def _limit_above_guarantee(self) -> Memory:
        if self.limit == 0:
            raise ValueError("memory.limit must be more than 0, e.g. 4G")
        if self.guarantee is not None and self.limit < self.guarantee:
            raise ValueError(
                f"memory.limit ({format_memory(self.limit)}) is below memory.guarantee "
                f"({format_memory(self.guarantee)}); raise the limit or lower the guarantee"
            )
        return self


#: the extended resource of a whole NVIDIA GPU, and of a time-sliced share of one (the
#: NVIDIA device plugin's time-slicing with ``renameByDefault: true``)
WHOLE_GPU = "nvidia.com/gpu"
SHARED_GPU = "nvidia.com/gpu.shared"
# A Kubernetes extended resource name: a domain, a slash, a name (nvidia.com/mig-1g.10gb).
_EXTENDED_RESOURCE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


class GPU(StrictModel):
    """GPUs of one kind; ``count`` is required whenever a ``gpu`` block is present. A
    slice instead of whole GPUs: ``resource`` names the device plugin's extended resource
    (a MIG slice, ``nvidia.com/mig-1g.10gb``), or ``shared: true`` asks for a time-sliced
    share (``nvidia.com/gpu.shared``). Slices are handed out by a cluster's NVIDIA device
    plugin; the embedded mode has none."""

    count: int | None = Field(None, description="How many GPUs (required in a `gpu` block; at least 1), or slices.")
    type: str | None = Field(None, description="What the picker calls them, e.g. `NVIDIA A10G`; informational.")
    resource: str | None = Field(None, description="The extended resource to ask for instead of whole GPUs "
                                 f"(`{WHOLE_GPU}`): a MIG slice as the NVIDIA device plugin's mixed strategy "
                                 "names it, e.g. `nvidia.com/mig-1g.10gb` (its own memory and compute). "
                                 "Cluster mode only.")
    shared: bool = Field(False, description=f"A time-sliced share of a GPU (`{SHARED_GPU}`: the device plugin's "
                         "time-slicing with `renameByDefault: true`), its memory not isolated from the other "
                         "sessions on that GPU. Cluster mode only.")

    @model_validator(mode="after")
    def _count_required(self) -> GPU:
        if self.count is None:
            raise ValueError("gpu.count is missing: a GPU profile must say how many GPUs, e.g. count: 1")
        if self.count < 1:
            raise ValueError("gpu.count must be at least 1; remove the gpu block for a CPU profile")
        if self.resource is not None:
            if self.shared:
                raise ValueError(f"gpu: give either shared: true (a time-sliced share, {SHARED_GPU}) or resource "
                                 "(a MIG slice such as nvidia.com/mig-1g.10gb), not both")
            if not _EXTENDED_RESOURCE.match(self.resource) or self.resource.startswith("kubernetes.io/"):
                raise ValueError(f"gpu.resource {self.resource[:80]!r} is not an extended resource name: write "
                                 "DOMAIN/NAME as the device plugin advertises it, e.g. nvidia.com/mig-1g.10gb")
        return self

    @property
    def kubernetes_resource(self) -> str:
        """What a pod asks for.

        >>> GPU(count=1).kubernetes_resource, GPU(count=1, shared=True).kubernetes_resource
        ('nvidia.com/gpu', 'nvidia.com/gpu.shared')
        >>> GPU(count=2, resource="nvidia.com/mig-1g.10gb").kubernetes_resource
        'nvidia.com/mig-1g.10gb'
        """
        return self.resource or (SHARED_GPU if self.shared else WHOLE_GPU)

    @property
    def slice(self) -> str | None:
        """What kind of slice this is, in the card's words; None for whole GPUs.

        >>> GPU(count=1).slice is None, GPU(count=1, shared=True).slice
        (True, 'a time-sliced share of a GPU: its memory is not isolated from the other sessions on it')
        >>> GPU(count=1, resource="nvidia.com/mig-1g.10gb").slice
        'a MIG slice (mig-1g.10gb): its own memory and compute, isolated from other sessions'
        """
        if self.kubernetes_resource == WHOLE_GPU:
            return None
        if self.kubernetes_resource.endswith(".shared"):  # SHARED_GPU, or a renamed share
            return "a time-sliced share of a GPU: its memory is not isolated from the other sessions on it"
        name = self.kubernetes_resource.split("/", 1)[1]
        if name.startswith("mig-"):
            return f"a MIG slice ({name}): its own memory and compute, isolated from other sessions"
        return f"a GPU slice ({self.kubernetes_resource})"


# GPU servers cost the most while they sit idle: they are stopped sooner by default.
CPU_IDLE_TIMEOUT = 3600
GPU_IDLE_TIMEOUT = 1200


class Culling(StrictModel):
    """When an idle server is stopped (its home stays). What counts as activity is in
    docs/admin-guide.md ("Idle culling and usage"): a busy kernel, an open terminal, an SSH connection, GPU use."""

    idle_timeout: int | None = Field(None, description="Seconds without activity before the server is "
                                     f"stopped; null: {CPU_IDLE_TIMEOUT} for a CPU profile, {GPU_IDLE_TIMEOUT} "
                                     "for a GPU profile.")
    max_age: int | None = Field(None, description="Seconds a server may run at most, active or not; null: "
                                "no limit.")
    warn_before: int | None = Field(None, description="Seconds ahead of a stop that JupyterLab warns "
                                    "(with an Extend button); null: a quarter of `idle_timeout`, at most 300.")

    @field_validator("idle_timeout", "max_age", "warn_before", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number of seconds such as 3600, or null (got {value!r})")
        if value <= 0:
            raise ValueError(f"must be more than 0 seconds (got {value}); use null for the default"
                             " (or, for max_age, no limit)")
        return value


class Price(StrictModel):
    """What an hour of a session of this profile costs, in the deployment's currency, for
    the home page and the usage page (``atelier usage``). Each figure is multiplied by the
    profile's limit: ``cpu.limit`` cores, ``memory.limit`` in GB (10^9 bytes), ``gpu.count``."""

    cpu_hour: float = Field(0, ge=0, description="Per core and hour, e.g. `0.04`.")
    memory_gb_hour: float = Field(0, ge=0, description="Per GB of memory and hour, e.g. `0.005`.")
    gpu_hour: float = Field(0, ge=0, description="Per GPU and hour, e.g. `1.20` for an A10G.")

    def per_hour(self, *, cpu: float, memory: float, gpus: int) -> float:
        """What an hour costs for these sizes (``memory`` in bytes).

        >>> Price(cpu_hour=0.04, memory_gb_hour=0.005, gpu_hour=1.2).per_hour(cpu=2, memory=4e9, gpus=1)
        1.3
        """
        return round(cpu * self.cpu_hour + memory / 1e9 * self.memory_gb_hour + gpus * self.gpu_hour, 10)


class Toleration(StrictModel):
    """A Kubernetes toleration, so sessions may run on tainted nodes (GPU, high-memory pools)."""

    key: str = Field(description="The taint's key, e.g. `nvidia.com/gpu`.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="`Equal` matches `value`; `Exists` any value.")
    value: str | None = Field(None, description="The taint's value, with `operator: Equal`.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="The taint's effect; null matches every effect.")


class Profile(StrictModel):
    """One session size: what the picker shows and what the spawner gives."""

    name: str = Field(description="Identifier: lower-case letters, digits and `-` (a DNS label), e.g. "
                      "`cpu-small`; what `{\"profile\": NAME}` in a spawn request names.")
    display_name: str = Field(description="The title of its card in the picker.")
    description: str = Field("", description="One line under the title in the picker.")
    default: bool = Field(False, description="Preselected in the picker, and used when a request names no "
                          "profile (at most one profile).")
    cpu: CPU = Field(description="CPU cores: `{guarantee, limit}`.")
    memory: Memory = Field(description="Memory: `{guarantee, limit}`.")
    gpu: GPU | None = Field(None, description="GPUs: `{count, type}`; null for a CPU profile.")
    image: str | None = Field(None, description="Session image on a cluster; null: the cluster settings' "
                              "`singleuser_image`.")
    node_selector: dict[str, str] = Field(default_factory=dict,
                                          description="Node labels a cluster session must run on, e.g. "
                                          "`{atelier.dev/pool: gpu}`.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints a cluster session tolerates.")
    groups: list[str] = Field(default_factory=list,
                              description="Hub groups whose members may use it; empty: everyone.")
    culling: Culling = Field(Culling(), description="Idle culling: `{idle_timeout, max_age, warn_before}` "
                             "in seconds.")
    price: Price | None = Field(None, description="What an hour costs: `{cpu_hour, memory_gb_hour, gpu_hour}` "
                                "(each 0 when left out), in the deployment's currency; null (the default): "
                                "no price, so the home page and the usage page show hours used and no cost.")
    source: str = Field("", exclude=True, description="file the profile came from")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"name {value!r} must be lower-case letters, digits and '-', e.g. cpu-small"
            )
        return value

    @property
    def gpu_count(self) -> int:
        return self.gpu.count if self.gpu and self.gpu.count else 0

    @property
    def gpu_slice(self) -> str | None:
        """What its GPU slice is (:attr:`GPU.slice`); None for whole GPUs or none."""
        return self.gpu.slice if self.gpu else None

    @property
    def idle_timeout(self) -> int:
        """Seconds idle before a stop: the profile's own, else the default for its kind.

        >>> Profile(name="g", display_name="G", cpu={"limit": 8}, memory={"limit": "32G"},
        ...         gpu={"count": 1}).idle_timeout
        1200
        """
        if self.culling.idle_timeout is not None:
            return self.culling.idle_timeout
        return GPU_IDLE_TIMEOUT if self.gpu_count else CPU_IDLE_TIMEOUT

    @property
    def warn_before(self) -> int:
        """Seconds ahead of a stop that the session warns."""
        if self.culling.warn_before is not None:
            return min(self.culling.warn_before, self.idle_timeout)
        return min(300, self.idle_timeout // 4)

    @model_validator(mode="after")
    def _warning_within_timeout(self) -> Profile:
        c = self.culling
        if c.warn_before is not None and c.warn_before >= self.idle_timeout:
            raise ValueError(f"culling.warn_before ({c.warn_before}) must be below culling.idle_timeout "
                             f"({self.idle_timeout}); lower warn_before or raise idle_timeout")
        return self


def _error_lines(path: Path, err: ValidationError) -> list[str]:
    lines = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(file)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = f"unknown field; remove it or check its spelling (allowed: {_ALLOWED})"
        elif item["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{path}: {field}: {msg}")
    return lines


_ALLOWED = ", ".join(Profile.model_fields)


def load_profiles(directory: str | Path) -> list[Profile]:
    """Load and validate every ``*.yaml`` profile in ``directory``.

    Raises :class:`ProfileError` listing every problem found (file: field: message).

    >>> [p.name for p in load_profiles("profiles")][:1]  # doctest: +SKIP
    ['cpu-large']
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ProfileError(f"{directory}: profiles folder not found; pass the folder that holds *.yaml")
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        raise ProfileError(f"{directory}: no *.yaml profile files; add one such as cpu-small.yaml")
    profiles: list[Profile] = []
    problems: list[str] = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            problems.append(f"{path}: not valid YAML: {parse_problem(exc)}")
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}: (file): expected a mapping of fields such as name:, cpu:, memory:")
            continue
        try:
            profiles.append(Profile.model_validate({**data, "source": str(path)}))
        except ValidationError as exc:
            problems.extend(_error_lines(path, exc))
    seen: dict[str, str] = {}
    for p in profiles:
        if p.name in seen:
            problems.append(f"{p.source}: name: {p.name!r} is also used by {seen[p.name]}; rename one")
        seen.setdefault(p.name, p.source)
    defaults = [p for p in profiles if p.default]
    if len(defaults) > 1:
        problems.append(
            f"{defaults[1].source}: default: more than one default profile "
            f"({', '.join(p.name for p in defaults)}); keep `default: true` in one file only"
        )
    if problems:
        raise ProfileError("\n".join(problems))
    # The default first, then by size, so the picker reads small to large.
    return sorted(profiles, key=lambda p: (not p.default, p.gpu_count, p.cpu.limit, p.memory.limit))


def visible_profiles(profiles: list[Profile], groups: set[str] | frozenset[str]) -> list[Profile]:
    """Profiles a user in ``groups`` may use: those with no ``groups`` list, or sharing one."""
    return [p for p in profiles if not p.groups or set(p.groups) & set(groups)]


def _shown(value: Any, most: int = 80) -> str:
    """``repr(value)``, cut to ``most`` characters: a request's value goes into messages and logs.

    >>> _shown("x" * 100, most=10)
    "'xxxxxxxx…"
    """
    text = repr(value)
    return text if len(text) <= most else text[:most - 1] + "…"


def resolve_profile(
    profiles: list[Profile], requested: Any, *, groups: set[str] | frozenset[str] = frozenset()
) -> Profile:
    """The profile a spawn request names, checked server-side; the default when none is named.

    Raises :class:`ProfileError` for an unknown profile or one the user may not use.
    """
    allowed = visible_profiles(profiles, groups)
    if requested in (None, ""):
        default = next((p for p in allowed if p.default), allowed[0] if allowed else None)
        if default is None:
            raise ProfileError("no profile is available to you; ask an admin to add you to a group")
        return default
    if not isinstance(requested, str):
        raise ProfileError(f"profile must be a profile name such as 'cpu-small', not {_shown(requested)}")
    names = ", ".join(p.name for p in allowed)
    if len(requested) > 63:  # a DNS label: no profile has such a name; not echoed whole
        raise ProfileError(f"unknown profile {_shown(requested)} ({len(requested)} characters; profile names "
                           f"have at most 63); choose one of: {names}")
    for p in profiles:
        if p.name == requested:
            if p in allowed:
                return p
            raise ProfileError(f"profile {requested!r} is not available to you; choose one of: {names}")
    raise ProfileError(f"unknown profile {requested!r}; choose one of: {names}")


def to_kubespawner(profile: Profile) -> dict[str, Any]:
    """A KubeSpawner ``profile_list`` entry for ``profile``.

    >>> from atelier_hub.profiles import Profile
    >>> p = Profile(name="gpu-1", display_name="1 GPU", cpu={"limit": 8},
    ...             memory={"limit": "32G"}, gpu={"count": 1})
    >>> to_kubespawner(p)["kubespawner_override"]["extra_resource_limits"]
    {'nvidia.com/gpu': '1'}
    >>> mig = Profile(name="mig", display_name="MIG", description="A small GPU.", cpu={"limit": 4},
    ...               memory={"limit": "16G"}, gpu={"count": 1, "resource": "nvidia.com/mig-1g.10gb"})
    >>> entry = to_kubespawner(mig)
    >>> entry["kubespawner_override"]["extra_resource_limits"]
    {'nvidia.com/mig-1g.10gb': '1'}
    >>> entry["description"]
    'A small GPU. 1 × a MIG slice (mig-1g.10gb): its own memory and compute, isolated from other sessions.'
    """
    override: dict[str, Any] = {
        "cpu_limit": profile.cpu.limit,
        "mem_limit": profile.memory.limit,
    }
    if profile.cpu.guarantee is not None:
        override["cpu_guarantee"] = profile.cpu.guarantee
    if profile.memory.guarantee is not None:
        override["mem_guarantee"] = profile.memory.guarantee
    if profile.gpu_count:
        override["extra_resource_limits"] = {profile.gpu.kubernetes_resource: str(profile.gpu_count)}
    if profile.node_selector:
        override["node_selector"] = dict(profile.node_selector)
    if profile.tolerations:
        override["tolerations"] = [t.model_dump(exclude_none=True) for t in profile.tolerations]
    if profile.image:
        override["image"] = profile.image
    return {
        "display_name": profile.display_name,
        "slug": profile.name,
        # KubeSpawner's form shows the description: it says what a slice is.
        "description": " ".join(filter(None, [profile.description, f"{profile.gpu_count} × {profile.gpu_slice}."
                                              if profile.gpu_slice else ""])),
        "default": profile.default,
        "kubespawner_override": override,
    }


@dataclass(frozen=True)
class EmbeddedResources:
    """What a local-process session gets from its profile."""

    threads: int
    mem_limit: int
    gpu_count: int


def session_cpus(profile: Profile, *, usable: int | None) -> int:
    """The one CPU count of a session: its thread pools (``OMP_NUM_THREADS`` and
    friends), Spark's ``local[N]`` (or executor cores) and Ray's CPUs all use it.

    The profile's CPU limit in whole cores (at least 1), capped by the CPUs the session
    can really use where the spawner knows them (``usable``): on one machine, its cores,
    so a ``cpu-large`` session on a 2-core laptop runs 2 threads, ``local[2]`` and 2 Ray
    CPUs, not 8 that would fight over 2 cores. ``None``: a pod, whose node the
    scheduler picks with room for its limit.

    >>> p = Profile(name="cpu-large", display_name="L", cpu={"limit": 8}, memory={"limit": "16G"})
    >>> session_cpus(p, usable=2), session_cpus(p, usable=16), session_cpus(p, usable=None)
    (2, 8, 8)
    >>> session_cpus(Profile(name="t", display_name="T", cpu={"limit": 0.5}, memory={"limit": "1G"}), usable=None)
    1
    """
    cpus = max(1, math.floor(profile.cpu.limit))
    return min(cpus, usable) if usable is not None else cpus


def to_embedded(profile: Profile, *, host_cpus: int) -> EmbeddedResources:
    """Local-process sizing: thread pools at the CPU limit, capped by the host's cores
    (:func:`session_cpus`).

    >>> p = Profile(name="cpu-large", display_name="L", cpu={"limit": 8}, memory={"limit": "16G"})
    >>> to_embedded(p, host_cpus=2)
    EmbeddedResources(threads=2, mem_limit=16000000000, gpu_count=0)
    """
    threads = session_cpus(profile, usable=max(1, host_cpus))
    return EmbeddedResources(threads=threads, mem_limit=profile.memory.limit, gpu_count=profile.gpu_count)
