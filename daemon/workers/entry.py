"""Where each child process of the tree starts: the spawn targets, as light as possible.

A spawned child imports its target's module before it runs, and so does every process that
creates the child object. If the front named run_supervisor in supervisor.py as the target, the
front would import the supervisor's module and, through it, the decoder's and inference's: torch,
the tokenizer, silero. Each target here imports its real module only inside the child, so the front
and the supervisor, which only start processes, never load torch (about 150 MB each).
"""

from __future__ import annotations


def supervisor_process(*args) -> None:
    from daemon.workers.supervisor import run_supervisor

    run_supervisor(*args)


def inference_process(*args) -> None:
    from daemon.workers.inference import run_inference

    run_inference(*args)


def decoder_process(*args) -> None:
    from daemon.workers.decoder import run_decoder

    run_decoder(*args)
