"""Named model versions (serve.versions) beside base and domain: each loaded on its first request and, when loading
another would pass serve.memory_budget_mb, unloaded least recently used first.

What a version holds is estimated once, at startup, from its files: a transformers model or adapter its parameters
as loaded (float32), plus the base model again for an adapter that cannot share the domain adapter's weights (another
PEFT kind, or no domain adapter); a llama.cpp model its GGUF file and KV cache; an upstream model nothing. Base and
domain load at startup, stay loaded, and are not counted.

A request holds its version from admission to its last token, and a held version is never unloaded: a version that
fits only by unloading a held one is refused with 503 (OpenAI clients retry it). Loads and unloads happen one at a
time, so a version many requests ask for at once loads once.

With the model registry (app/registry.py), its versions are served too, found at run time: `domain@N` is version N,
`domain@ALIAS` the version the alias points at, and `domain` the `production` alias's version (the workspace's train
output while there is none). `resolve` turns the name a request asks for into that concrete name as the request
arrives; the registry's versions and aliases are read again when the last read is over REFRESH_S old, so a promote or
rollback reaches every server on the database within about a second, with no endpoint to call and nothing to secure.
A request keeps the version it was resolved to until its last token; the version an alias left stays loaded until
the LRU needs its room (a rollback is instant), and a database that cannot be read keeps the aliases last read.

    name = versions.resolve(name)  # in the threadpool: domain → domain@3 (reads the registry at most once a second)
    versions.hold(name)      # as the request is admitted, on the event loop: counts it as a user
    versions.load(name)      # in the threadpool: loads it unless loaded (unloading idle ones first), marks it used
    versions.release(name)   # when the request ends, always
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from hangjia.app.backends import base_gguf, open_backend
from hangjia.app.db.engine import sqlite_file
from hangjia.app.db.models import ModelAlias, ModelVersion
from hangjia.app.metrics import Metrics
from hangjia.app.registry import Registry, alias_targets, concrete, has_registry, tree_digest
from hangjia.core.config import ServeConfig
from hangjia.core.errors import HangjiaError
from hangjia.llm.generation import Engine
from hangjia.llm.llamacpp import resident_bytes
from hangjia.llm.models import loaded_bytes
from hangjia.llm.weights import DOMAIN, is_adapter, is_gguf

MIB = 2**20
REFRESH_S = 1.0  # how old the registry's versions and aliases may be when a request is resolved
log = logging.getLogger("uvicorn.error")


def version_backend(name: str, path: Path, config: ServeConfig) -> str:
    """What generates version `name`: llama.cpp for a .gguf file; else serve.backends[name], else serve.backend,
    `auto` meaning transformers."""
    kind = config.backends.get(name, config.backend)
    if is_gguf(path):
        if kind not in ("auto", "llama.cpp"):
            raise HangjiaError(f"serve.versions.{name} is a .gguf file, which only llama.cpp serves, not {kind}.")
        return "llama.cpp"
    if kind == "llama.cpp" and is_adapter(path):
        raise HangjiaError(
            f"serve.versions.{name} is an adapter folder, which llama.cpp cannot serve; export the model it makes "
            f"(`hangjia export`) and name its .gguf file, or set serve.backends.{name}: transformers."
        )
    return "transformers" if kind == "auto" else kind


class Versions:
    """The engine's named versions as one server loads and unloads them; checked and sized at startup, or as the
    registry's versions appear."""

    def __init__(self, engine: Engine, config: ServeConfig, metrics: Metrics, registry: Registry | None = None):
        self.engine, self.config, self.metrics = engine, config, metrics
        self.budget = config.memory_budget_mb * MIB
        self.kinds = {name: version_backend(name, path, config) for name, path in engine.versions.items()}
        """What generates each version: transformers, llama.cpp or openai-upstream."""
        # A whole model folder on llama.cpp is converted now (once per folder, cached), so its size is known.
        self._gguf = {
            name: path if is_gguf(path) else base_gguf(path, config.gguf)
            for name, path in engine.versions.items()
            if self.kinds[name] == "llama.cpp"
        }
        self.sizes = {name: self._estimate(name) for name in engine.versions}
        """Estimated bytes each version holds once loaded."""
        for name, size in self.sizes.items():
            if self.budget and size > self.budget:
                raise HangjiaError(
                    f"serve.versions.{name} needs about {size / MIB:.0f} MiB, more than serve.memory_budget_mb "
                    f"({config.memory_budget_mb}); raise the budget (or lower serve.parallel or serve.context)."
                )
            metrics.model_memory.labels(name).set(0)
        self._lock = threading.Lock()  # guards the two tables below; held for moments only
        self._loading = threading.Lock()  # held through a load and the unloads it needs
        self._users: Counter[str] = Counter()
        self._resident: OrderedDict[str, int] = OrderedDict()
        """The loaded versions and their sizes, least recently used first."""
        self.registry = registry
        self.configured = set(engine.versions)
        """serve.versions' names: served as configured, even one called like a registry version."""
        self.aliases: dict[str, str] = {}
        """Registry alias → the version it points at, as last read: {"domain@production": "domain@3", ...}."""
        self.refused: dict[str, str] = {}
        """Registry versions this server cannot serve, and why (an adapter on another base model)."""
        self._read_at = float("-inf")
        self._reading = threading.Lock()
        self._base_digest: str | None = None
        self.refresh(force=True)

    def resolve(self, name: str) -> str:
        """The concrete name that answers a request for `name`: `domain` → the production alias's `domain@N` (itself
        while the registry has none), `domain@ALIAS` → its `domain@N`; any other name as it is. Blocks for a registry
        read when the last one is over REFRESH_S old."""
        if self.registry is None or name in self.configured or not (name == DOMAIN or name.startswith(f"{DOMAIN}@")):
            return name
        self.refresh()
        if name == DOMAIN:
            return concrete(name, self.aliases)
        if name in self.refused:
            raise HangjiaError(self.refused[name], status_code=409)
        tail = name.partition("@")[2]
        if not tail.isdigit() and name not in self.aliases:
            known = ", ".join(sorted(self.aliases)) or "none yet"
            raise HangjiaError(
                f"Model '{name}': the registry has no alias '{tail}' (aliases: {known}); `hangjia registry promote N "
                f"--alias {tail}` sets it.",
                status_code=404,
            )
        return concrete(name, self.aliases)

    def refresh(self, force: bool = False) -> None:
        """Read the registry's versions and aliases again unless the last read is under REFRESH_S old (a request that
        finds another thread reading uses the last read). New versions become served names, loaded on first use."""
        if self.registry is None or not self._reading.acquire(blocking=force):
            return
        try:
            if not force and time.monotonic() - self._read_at < REFRESH_S:
                return
            read = self._read()
            self._read_at = time.monotonic()
            if read is None:
                return
            versions, aliases = read
            for row in versions:
                self._add_registered(row)
            self.aliases = alias_targets(aliases)
        finally:
            self._reading.release()

    def _read(self) -> tuple[list[ModelVersion], list[ModelAlias]] | None:
        """The registry's `domain` versions (without their lineage) and aliases; empty while the database or its
        registry tables do not exist; None, with the last read kept, when the database cannot be read."""
        registry = self.registry
        path = sqlite_file(registry.url)
        if path is not None and not path.exists():  # no registry yet (and reading must not create the file)
            return [], []
        columns = (ModelVersion.version, ModelVersion.kind, ModelVersion.weights, ModelVersion.base_model)
        try:
            if not self.aliases and not has_registry(registry.engine):
                return [], []
            with registry.sessions() as session:
                versions = session.execute(
                    select(*columns, ModelVersion.base_digest).where(ModelVersion.model == DOMAIN)
                ).all()
                aliases = list(session.scalars(select(ModelAlias).where(ModelAlias.model == DOMAIN)))
        except SQLAlchemyError as exc:
            log.warning("Cannot read the model registry (%s); serving the aliases read before.", exc)
            return None
        return [ModelVersion(model=DOMAIN, **row._asdict()) for row in versions], aliases

    def _add_registered(self, row: ModelVersion) -> None:
        """Serve registry version `row` as `domain@N` (loaded on its first request), unless it is served already or
        cannot be: an adapter trained on another base model than this server's."""
        name = row.ref
        if name in self.engine.versions or name in self.refused:
            return
        path = self.registry.root / row.weights
        if row.kind != "full" and not self._same_base(row):
            self.refused[name] = (
                f"Model '{name}' is an adapter on the base model {row.base_model}, not on this server's "
                f"({self.engine.base_dir}); serve it from a workspace trained on that base."
            )
            return
        # A registry version is a Hugging Face folder: transformers generates it, or the upstream holding its copy.
        kind = "openai-upstream" if self.config.backend == "openai-upstream" else "transformers"
        try:
            self.engine.add_version(name, path)
            size = self._estimate_path(path, kind, name)
        except HangjiaError as exc:  # its weights are missing from this workspace's registry/blobs
            self.engine.versions.pop(name, None)
            self.refused[name] = str(exc)
            return
        with self._lock:
            self.kinds[name], self.sizes[name] = kind, size
        self.metrics.model_memory.labels(name).set(0)

    def _same_base(self, row: ModelVersion) -> bool:
        if row.base_model == str(self.engine.base_dir):
            return True
        if self._base_digest is None:  # hashed only when a version names another folder (a copy elsewhere, say)
            self._base_digest = tree_digest(self.engine.base_dir)
        return row.base_digest == self._base_digest

    @property
    def parallel(self) -> dict[str, int]:
        """The admission width of each version a batching backend (llama.cpp, an upstream) generates."""
        return {name: self.config.parallel for name, kind in self.kinds.items() if kind != "transformers"}

    def hold(self, name: str) -> None:
        """Count a request using `name` (base and domain: nothing to count); it stays loaded until released."""
        if name in self.kinds:
            with self._lock:
                self._users[name] += 1

    def release(self, name: str) -> None:
        if name in self.kinds:
            with self._lock:
                self._users[name] -= 1

    def load(self, name: str) -> None:
        """Load a held version unless it is loaded, unloading idle ones first as the budget needs; raise 503 when that
        is not enough. Blocks while another version loads."""
        if name not in self.kinds or self._touch(name):
            return
        with self._loading:
            if self._touch(name):  # another request loaded it meanwhile
                return
            with self._lock:
                victims = self._victims(name)
                for victim in victims:  # gone from the table first, so no request starts using them now
                    del self._resident[victim]
            for victim in victims:
                self.engine.unload(victim)
                self.metrics.model_unloads.labels(victim).inc()
                self.metrics.model_memory.labels(victim).set(0)
            if self.kinds[name] == "transformers":
                self.engine.load(name)
            else:
                self.engine.backends[name] = open_backend(name, self.kinds[name], self.config, self._gguf.get(name))
            with self._lock:
                self._resident[name] = self.sizes[name]
            self.metrics.model_loads.labels(name).inc()
            self.metrics.model_memory.labels(name).set(self.sizes[name])

    def _touch(self, name: str) -> bool:
        """Mark `name` the most recently used, when it is loaded."""
        with self._lock:
            if name in self._resident:
                self._resident.move_to_end(name)
                return True
        return False

    def _victims(self, name: str) -> list[str]:
        """The idle versions to unload, least recently used first, so that `name` fits in the budget."""
        if not self.budget:
            return []
        excess = sum(self._resident.values()) + self.sizes[name] - self.budget
        victims = []
        for other, size in self._resident.items():
            if excess <= 0:
                break
            if not self._users[other]:
                victims.append(other)
                excess -= size
        if excess > 0:
            busy = ", ".join(other for other in self._resident if self._users[other])
            raise HangjiaError(
                f"Model '{name}' (about {self.sizes[name] / MIB:.0f} MiB) does not fit in serve.memory_budget_mb "
                f"({self.config.memory_budget_mb} MiB) beside {busy}, which requests are using now; retry when they "
                "finish, or raise the budget.",
                status_code=503,
            )
        return victims

    def _estimate(self, name: str) -> int:
        return self._estimate_path(self.engine.versions[name], self.kinds[name], name)

    def _estimate_path(self, path: Path, kind: str, name: str) -> int:
        if kind == "llama.cpp":
            return resident_bytes(self._gguf[name], self.config.parallel, self.config.context)
        if kind != "transformers":
            return 0  # the upstream server holds the weights
        if is_adapter(path) and not self.engine.shares_base(name):
            return loaded_bytes(self.engine.base_dir) + loaded_bytes(path)
        return loaded_bytes(path)
