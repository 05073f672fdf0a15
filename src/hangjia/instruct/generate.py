"""Run the configured generators over the ingested documents: the body of `hangjia synth`.

Each generator returns its pairs and a Counter of drops by reason; this module runs the ones named in
`synth.generators`, adds imported alpaca/sharegpt files, and keeps per-generator drops for the report.
The teacher is only built when a generator needs one (an embedded teacher costs a model load).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.documents import Document
from hangjia.instruct.synth import QAPair, extract_pairs
from hangjia.llm.teacher import Teacher

Search = Callable[[str, int], list[Chunk]]
TEACHER_GENERATORS = ("self_qa", "self_instruct")


def needs_teacher(cfg: ProjectConfig) -> bool:
    return any(g in TEACHER_GENERATORS for g in cfg.synth.generators)


def load_seed_tasks(path: Path) -> list[dict[str, str]]:
    tasks = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    task = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise HangjiaError(f"{path}:{n}: not JSON ({exc.msg}).") from None
                if not isinstance(task, dict) or not task.get("instruction"):
                    raise HangjiaError(f'{path}:{n}: a seed task needs an "instruction" field.')
                tasks.append({k: str(task.get(k, "")) for k in ("instruction", "input", "output")})
    return tasks


def run_generators(
    cfg: ProjectConfig,
    documents: list[Document],
    chunks: list[Chunk],
    *,
    teacher: Teacher | None,
    search: Search | None,
    status: Callable[[str], None] = lambda text: None,
) -> tuple[list[QAPair], dict[str, Counter]]:
    """Pairs from every configured generator, in generator order, and each generator's drops by reason."""
    s = cfg.synth
    pairs: list[QAPair] = []
    drops: dict[str, Counter] = {}
    for name in s.generators:
        status(name)
        if name == "extractive":
            made, drops[name] = extract_pairs(documents, chunks, max_per_chunk=s.max_pairs_per_chunk), Counter()
        elif name == "kg":
            from hangjia.instruct.kgqa import kg_pairs, load_triples, triples_from_records

            triples = list(triples_from_records(documents, chunks))
            for path in s.triples:
                triples.extend(load_triples(path))
            by_id = {c.id: c for c in chunks}
            made, drops[name] = kg_pairs(triples, multi_hop=s.multi_hop, seed=cfg.select.seed, chunks_by_id=by_id)
        elif name == "self_qa":
            from hangjia.instruct.selfqa import self_qa

            made, drops[name] = self_qa(
                chunks,
                _need(teacher, name),
                questions_per_chunk=s.questions_per_chunk,
                max_tokens=cfg.teacher.max_tokens,
                temperature=cfg.teacher.temperature,
                seed=cfg.select.seed,
            )
        elif name == "self_instruct":
            from hangjia.instruct.selfinstruct import self_instruct

            if s.seed_tasks is None:
                raise HangjiaError(
                    "The self_instruct generator needs seed tasks; set synth.seed_tasks in hangjia.yaml."
                )
            retrieve = (lambda text: search(text, cfg.rag.top_k)) if search is not None else None
            made, drops[name] = self_instruct(
                load_seed_tasks(s.seed_tasks),
                _need(teacher, name),
                target=s.self_instruct_target,
                retrieve=retrieve,
                seed=cfg.select.seed,
            )
        else:  # the config's Literal makes this unreachable; a new generator must be added above
            raise HangjiaError(f"Unknown generator {name!r}.")
        pairs.extend(made)
    if s.imports:
        from hangjia.instruct.formats import import_pairs

        for path in s.imports:
            status(f"import {Path(path).name}")
            pairs.extend(import_pairs(Path(path)))
    return pairs, drops


def _need(teacher: Teacher | None, generator: str) -> Teacher:
    if teacher is None:
        raise HangjiaError(f"The {generator} generator needs a teacher model; see the `teacher:` section.")
    return teacher
