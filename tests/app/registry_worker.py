"""Run by the concurrent-promote test: `python -m tests.app.registry_worker URL WS SEED OPS START` waits until the
time START (so the workers overlap), then promotes random versions and rolls back the `production` alias OPS times,
printing one JSON line per operation: the event it made (id, from, to), or why it made none."""

from __future__ import annotations

import json
import random
import sys
import time

from hangjia.app.registry import Registry
from hangjia.core.errors import HangjiaError


def operate(registry: Registry, rng: random.Random, versions: int) -> dict:
    """One random promote (3 in 4) or rollback of `production`: the event as a dict, or {"refused": reason}."""
    try:
        if rng.random() < 0.75:
            event = registry.promote(rng.randint(1, versions), by=f"worker-{rng.random():.6f}")
        else:
            event = registry.rollback(by="worker")
    except HangjiaError as exc:
        return {"refused": exc.message}
    if event is None:
        return {"refused": "already there"}
    return {"id": event.id, "from": event.from_version, "to": event.to_version, "action": event.action}


def main(url: str, workspace: str, seed: int, ops: int, start: float) -> None:
    registry = Registry(url, workspace, create=False)
    versions = len(registry.versions())
    rng = random.Random(seed)
    time.sleep(max(0.0, start - time.time()))
    for _ in range(ops):
        print(json.dumps(operate(registry, rng, versions)), flush=True)
    registry.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
