"""The cyclic garbage collector off for a block: what is freed then is freed by reference
counting alone (tests that objects do not wait for a collection)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def no_collector() -> Iterator[None]:
    """Collect once, then keep the collector off until the block ends."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
