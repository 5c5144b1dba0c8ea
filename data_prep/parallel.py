"""Standardize many SMILES: cache first, then worker processes in ordered chunks for the rest.

Identical input SMILES are computed once. Work goes out in small chunks (a few slow tautomer cases must
not leave a core idle) through a bounded window, and comes back in input order; finished chunks are written
to the cache as they arrive, so an interrupted run keeps what it did.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from data_prep.cache import RecordCache, default_cache_dir, smiles_key
from data_prep.config import PrepConfig
from data_prep.console import console
from data_prep.featurize import Featurizer, MolRecord, cache_namespace

#: Below this many molecules to compute, a process pool costs more than it saves.
MIN_PARALLEL = 64

_WORKER: Featurizer | None = None


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def compute_records(
    smiles: Sequence[str],
    config: PrepConfig,
    *,
    n_jobs: int | None = None,
    cache_dir: str | Path | None | bool = None,
    progress: bool = True,
    stats: dict[str, Any] | None = None,
) -> list[MolRecord]:
    """One MolRecord per input SMILES, in order. `cache_dir`: None = default location, False = no cache.

    `stats`, when given, receives cache hits/misses, jobs, wall time and summed per-step worker seconds.
    """
    n_jobs = default_jobs() if not n_jobs or n_jobs < 1 else int(n_jobs)
    unique = list(dict.fromkeys(smiles))
    keys = [smiles_key(s) for s in unique]
    cache = None
    if cache_dir is not False:
        cache = RecordCache(default_cache_dir() if cache_dir in (None, True) else Path(cache_dir),
                            cache_namespace(config))
    t0 = time.perf_counter()
    try:
        known = cache.get_many(keys) if cache is not None else {}
        todo = [i for i, k in enumerate(keys) if k not in known]
        timings: dict[str, float] = {}
        t_lookup = time.perf_counter() - t0
        computed: dict[bytes, MolRecord] = {}
        with _pool(config, n_jobs if len(todo) >= MIN_PARALLEL else 1) as pool, \
                _Progress(progress, len(todo)) as advance:
            for positions, records, chunk_timings in _run(unique, todo, config, pool, n_jobs):
                batch = [(keys[i], r) for i, r in zip(positions, records, strict=True)]
                computed.update(batch)
                if cache is not None:
                    cache.put_many(batch)
                for name, sec in chunk_timings.items():
                    timings[name] = timings.get(name, 0.0) + sec
                advance(len(positions))
    finally:
        if cache is not None:
            cache.close()
    if stats is not None:
        stats.update(
            inputs=len(smiles), unique=len(unique), cache_hits=len(unique) - len(todo), computed=len(todo),
            jobs=n_jobs if len(todo) >= MIN_PARALLEL else 1, cache_lookup_s=round(t_lookup, 3),
            wall_s=round(time.perf_counter() - t0, 3), worker_s={k: round(v, 3) for k, v in timings.items()},
        )
    by_key = {**known, **computed}
    by_smiles = {s: by_key[k] for s, k in zip(unique, keys, strict=True)}
    return [by_smiles[s] for s in smiles]


@contextlib.contextmanager
def _pool(config: PrepConfig, n_jobs: int) -> Iterator[ProcessPoolExecutor | None]:
    """Worker processes with a Featurizer each, started before any progress thread exists; None for 1 job.

    On Linux the workers are forked: they start in milliseconds and, unlike spawn/forkserver, do not
    re-import the caller's main module (scripts and notebooks need no `if __name__ == "__main__"` guard).
    Elsewhere Python's default start method is used.
    """
    if n_jobs <= 1:
        yield None
        return
    method = "fork" if sys.platform.startswith("linux") else None
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_init_worker, initargs=(config,)) as pool:
        pool.submit(_work, []).result()  # start every worker now
        yield pool


def _run(
    unique: list[str], todo: list[int], config: PrepConfig, pool: ProcessPoolExecutor | None, n_jobs: int
) -> Iterator[tuple[list[int], list[MolRecord], dict[str, float]]]:
    """Yield (positions, records, timings) per chunk, in input order."""
    if not todo:
        return
    if pool is None:
        featurizer = Featurizer(config)
        step = 256
        for start in range(0, len(todo), step):
            positions = todo[start : start + step]
            timings: dict[str, float] = {}
            yield positions, [featurizer(unique[i], timings) for i in positions], timings
        return
    size = max(4, min(64, len(todo) // (n_jobs * 16)))
    chunks = iter([todo[i : i + size] for i in range(0, len(todo), size)])
    window: deque[tuple[list[int], Future]] = deque()

    def submit(positions: list[int] | None) -> None:
        if positions is not None:
            window.append((positions, pool.submit(_work, [unique[i] for i in positions])))

    for _ in range(n_jobs * 4):  # a bounded window keeps memory flat and results in order
        submit(next(chunks, None))
    while window:
        positions, future = window.popleft()
        try:
            records, timings = future.result()
        except BrokenProcessPool:
            raise RuntimeError(
                "a standardization worker process died (an RDKit crash on some structure, or out of memory); "
                "re-run with --jobs 1 to see which structure"
            ) from None
        submit(next(chunks, None))
        yield positions, records, timings


def _init_worker(config: PrepConfig) -> None:
    global _WORKER
    _WORKER = Featurizer(config)


def _work(smiles: list[str]) -> tuple[list[MolRecord], dict[str, float]]:
    assert _WORKER is not None
    timings: dict[str, float] = {}
    return [_WORKER(s, timings) for s in smiles], timings


class _Progress:
    """A rich progress bar over molecules, or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("standardizing"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
        self.bar.start()
        task = self.bar.add_task("standardize", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
