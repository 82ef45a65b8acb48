"""`paused()`: Python's cyclic garbage collector off while a stage builds a large tree.

The parser's tree and nodes, and the compiler's Envoy configs (millions of small dicts and lists at
10,000 rules), hold no reference cycles and are kept until the stage ends. The collector would
rescan all of them again and again as they pile up, which made both stages grow faster than the
policy, and would free nothing that reference counting does not. It runs again afterwards, with
what the stage built counted as old: left young, all of it would be scanned at once by the
first collection after the stage (a tenth of the compile time at 10,000 rules).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            # Through the permanent generation into the oldest: no scan on the way, and a full
            # collection, when one comes, still looks at everything.
            gc.freeze()
            gc.unfreeze()
            gc.enable()
