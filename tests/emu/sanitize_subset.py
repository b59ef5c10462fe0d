"""pytest plugin for tests/emu/sanitize.py: with ``LAMINA_EMU_SUBSET=k`` (k > 0)
each test function keeps at most k of its parametrized cases, drawn at random
with the test's name as the seed (the same cases every run), so that a
sanitized run (5-15x slower) still reaches every kernel on a spread of its
shapes, transposes and dtypes.  (A fixed stride would alias with the
parameter grid: every 16th of 2 x 2 x 2 x 8 cases is always the same shape.)"""

import os
import random

import pytest


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected theirs, so k cases of what is left stay
def pytest_collection_modifyitems(config, items):
    budget = int(os.environ.get("LAMINA_EMU_SUBSET", "0"))
    if budget <= 0:
        return
    groups = {}
    for item in items:
        groups.setdefault(getattr(item, "originalname", item.name), []).append(item)
    keep = set()
    for name, cases in groups.items():
        chosen = cases if len(cases) <= budget else random.Random(name).sample(cases, budget)
        keep.update(id(item) for item in chosen)
    config.hook.pytest_deselected(items=[item for item in items if id(item) not in keep])
    items[:] = [item for item in items if id(item) in keep]
