"""Named model versions (serve.versions) beside base and domain: each loaded on its first request and, when loading
another would pass serve.memory_budget_mb, unloaded least recently used first.

What a version holds is estimated once, at startup, from its files: a transformers model or adapter its parameters
as loaded (float32), plus the base model again for an adapter that cannot share the domain adapter's weights (another
PEFT kind, or no domain adapter); a llama.cpp model its GGUF file and KV cache; an upstream model nothing. Base and
domain load at startup, stay loaded, and are not counted.

A request holds its version from admission to its last token, and a held version is never unloaded: a version that
fits only by unloading a held one is refused with 503 (OpenAI clients retry it). Loads and unloads happen one at a
time, so a version many requests ask for at once loads once.

    versions.hold(name)      # as the request is admitted, on the event loop: counts it as a user
    versions.load(name)      # in the threadpool: loads it unless loaded (unloading idle ones first), marks it used
    versions.release(name)   # when the request ends, always
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path

from hangjia.app.backends import base_gguf, open_backend
from hangjia.app.metrics import Metrics
from hangjia.core.config import ServeConfig
from hangjia.core.errors import HangjiaError
from hangjia.llm.generation import Engine
from hangjia.llm.llamacpp import resident_bytes
from hangjia.llm.models import loaded_bytes
from hangjia.llm.weights import is_adapter, is_gguf

MIB = 2**20


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
    """The engine's named versions as one server loads and unloads them; checked and sized at startup."""

    def __init__(self, engine: Engine, config: ServeConfig, metrics: Metrics):
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
        path, kind = self.engine.versions[name], self.kinds[name]
        if kind == "llama.cpp":
            return resident_bytes(self._gguf[name], self.config.parallel, self.config.context)
        if kind != "transformers":
            return 0  # the upstream server holds the weights
        if is_adapter(path) and not self.engine.shares_base(name):
            return loaded_bytes(self.engine.base_dir) + loaded_bytes(path)
        return loaded_bytes(path)
