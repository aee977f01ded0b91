"""What /health says about the worker tree, computed from the live generation (or its absence)."""

from __future__ import annotations

from daemon.workers import messages as m
from daemon.workers.generation import Generation


def health_update(generation: Generation | None, failures: int) -> m.HealthUpdate:
    """Ready once every worker answered its probe and while each keeps its pulse: a stopped or frozen
    one shows "unresponsive" within seconds, a lost generation "restarting" until the next is up."""
    workers = [w.describe() for w in generation.workers] if generation else []
    states = {w["state"] for w in workers}
    ready = bool(workers) and states == {"ready"}
    status = ("ok" if ready else "restarting" if generation is None and failures
              else "unresponsive" if "unresponsive" in states else "loading")
    return m.HealthUpdate(ready, status, workers)
