"""One way to run a function over jobs in worker processes (prepare and predict decode media so).

`process_map` yields the results of fn over jobs: from `workers` spawned processes (whose
workers ignore SIGINT: interrupt.process_pool) when there is more than one worker and more than
one job, else in this process. Used as a context manager, so leaving the block for any reason
(an error, Ctrl-C) ends the pool at once.
"""

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from avfbp_jax import interrupt


@contextlib.contextmanager
def process_map(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int,
                ordered: bool = True) -> Iterator[Iterator[Any]]:
    """Yields an iterator over fn(job) for each job: in job order, or (ordered=False) as they
    finish. fn and the jobs must pickle when workers > 1."""
    if workers <= 1 or len(jobs) <= 1:
        yield map(fn, jobs)
        return
    with interrupt.process_pool(min(workers, len(jobs))) as pool:
        yield pool.imap(fn, jobs) if ordered else pool.imap_unordered(fn, jobs)
