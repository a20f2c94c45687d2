"""Fewer young garbage collections while a push runs.

A push of 1,000 changes allocates a few hundred thousand objects, nearly all of them alive
until its answer is sent (the changes, the locked rows, the decisions, the results) or
freed by reference counting. Under the worker's thresholds (server/gc_pauses.py: young
passes every 2,000 allocations) that set off ~50 young and ~5 middle passes per push, each
traversing the push's own live objects again: 30-40 ms of a push, measured in-process
(bench/profile_push.py), for garbage that is not there.

While at least one push runs in the worker, the young threshold is raised to
``PUSH_YOUNG_THRESHOLD``: no young pass at all during a push of 1,000 changes (its objects
alive at once peak around 50,000), where a pass there would only traverse and promote live
objects. A request no longer leaves its execution to the collector
(``tests/api/test_request_garbage.py``): reference counting frees the push's objects when
its answer is sent, so the held-back passes find nothing of it afterwards either. The
threshold still bounds what a pathological request could pile up meanwhile.

When the last push ends the thresholds are put back as they were (unless something else
changed them meanwhile: then they are left as that set them). The middle and old
thresholds, and so the server's policy for full passes, are not touched; nothing is frozen
or disabled. Other requests the worker serves during a push see the same raised threshold
for that time (a push takes a few hundred milliseconds). The HTTP endpoint holds young
passes back the same way for the whole of any request with a large body
(``server/app.py``), whose decoding and answer allocate as much outside the resolver.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Young passes every 500,000 net allocations of tracked objects during a push: none for a
# push of 1,000 changes.
PUSH_YOUNG_THRESHOLD = 500_000


class _Pushes:
    """How many pushes run in this worker, and the thresholds to restore after them."""

    running = 0
    restore: tuple[int, int, int] | None = None


@contextmanager
def fewer_young_collections() -> Iterator[None]:
    """Raise the young GC threshold while the block runs (see the module docstring)."""
    if _Pushes.running == 0:
        young, middle, old = gc.get_threshold()
        # 0 disables the collector: whoever did that keeps it so.
        if 0 < young < PUSH_YOUNG_THRESHOLD:
            _Pushes.restore = (young, middle, old)
            gc.set_threshold(PUSH_YOUNG_THRESHOLD, middle, old)
    _Pushes.running += 1
    try:
        yield
    finally:
        _Pushes.running -= 1
        restore = _Pushes.restore
        if _Pushes.running == 0 and restore is not None:
            _Pushes.restore = None
            if gc.get_threshold() == (PUSH_YOUNG_THRESHOLD, restore[1], restore[2]):
                gc.set_threshold(*restore)
