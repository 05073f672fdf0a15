"""Run a batch function `pa.Table -> pa.Table` over a table: in this process, or on Ray Data across cores and machines.

Both engines give the same table, row for row: the batches go through `fn` in order and their outputs are
concatenated in that order. `fn` must be picklable for Ray (a module-level function or a functools.partial of one,
see `hangjia.corpus.batches`) and should return one fixed schema whatever the batch holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pyarrow as pa

from hangjia.core.errors import HangjiaError

BatchFn = Callable[[pa.Table], pa.Table]
ENGINES = ("local", "ray")


def map_batches(table: pa.Table, fn: BatchFn, *, engine: str = "local", batch_size: int = 64) -> pa.Table:
    """fn applied to consecutive slices of batch_size rows, outputs concatenated in order."""
    if engine not in ENGINES:
        raise HangjiaError(f"Unknown data engine {engine!r}; use one of {', '.join(ENGINES)}.")
    if batch_size < 1:
        raise HangjiaError(f"The data engine's batch size must be at least 1, got {batch_size}.")
    if table.num_rows == 0:
        return fn(table)  # one call on the empty table gives the output schema; no batches, no Ray
    if engine == "ray":
        return _ray_map(table, fn, batch_size)
    return pa.concat_tables([fn(table.slice(i, batch_size)) for i in range(0, table.num_rows, batch_size)])


def _ray_map(table: pa.Table, fn: BatchFn, batch_size: int) -> pa.Table:
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise HangjiaError(
            "The 'ray' data engine needs Ray Data, which is not installed; "
            "run `pip install 'ray[data]'` (or `pip install 'hangjia[ray]'`), or use the 'local' engine."
        ) from e
    if not ray.is_initialized():  # a cluster the caller joined (ray.init(address=...)) is used as it is
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    # One block per batch, so each batch is a task of its own and the tasks spread over the CPUs.
    blocks = [table.slice(i, batch_size) for i in range(0, table.num_rows, batch_size)]
    ds = ray.data.from_arrow(blocks)
    # The dataset holds its own copy of the DataContext (taken in from_arrow), so these settings stay with this
    # run instead of changing DataContext.get_current() for everything else in the process.
    ds.context.execution_options.preserve_order = True  # else blocks come back in the order tasks finish
    ds.context.enable_progress_bars = False  # the CLI shows its own progress
    ds = ds.map_batches(fn, batch_format="pyarrow", batch_size=batch_size)
    out = ray.get(ds.to_arrow_refs())
    # Ray may leave out blocks that came back empty; with none left, the empty table's output has the schema.
    return pa.concat_tables(out) if out else fn(table.slice(0, 0))
