"""Where each child process of the tree starts: one spawn target, naming the real one by module path.

A spawned child imports its target's module before it runs, and so does every process that
creates the child object. If the front named run_supervisor in supervisor.py as the target, the
front would import the supervisor's module and, through it, the decoder's and inference's: torch,
the tokenizer, silero. `start` imports the named module only inside the child, so the front and the
supervisor, which only start processes, never load torch (about 150 MB each). Naming the target by
its path also keeps this module free of imports: the modules that start processes (generation,
dispatcher) import it, and it imports none of them back.
"""

from __future__ import annotations

import importlib

SUPERVISOR = "daemon.workers.supervisor:run_supervisor"
INFERENCE = "daemon.workers.inference:run_inference"
DECODER = "daemon.workers.decoder:run_decoder"


def start(target: str, *args) -> None:
    """Run `target` ("package.module:function") with `args`, in the child."""
    module, function = target.split(":")
    getattr(importlib.import_module(module), function)(*args)
