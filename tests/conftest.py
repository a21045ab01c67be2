"""Settings shared by every test directory.

Hypothesis: no per-example ``deadline``. A deadline is a timed assertion (speed belongs in
``tests/bench``), and on a loaded 2-core machine (CI runs two xdist workers) one example of a
pure function can take past the default 200 ms, failing a property that holds.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("spctl", deadline=None)
settings.load_profile("spctl")
