"""`async-engine serve`: the whole process tree behind one command.

The front (this process) runs waitress with the Falcon app; the supervisor and its workers are
child processes. SIGTERM or SIGINT drains: new jobs are refused, jobs in flight finish (up to
REQUEST_TIMEOUT_SECONDS), then the workers stop and no shared memory is left behind.
"""

from __future__ import annotations

import _thread
import logging
import signal
import threading

import waitress

from daemon.config import DaemonConfig
from daemon.dispatcher import Dispatcher
from daemon.front import create_app

log = logging.getLogger("async_engine.serve")


def serve(config: DaemonConfig) -> int:
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")
    if config.skip_decoder:
        log.error("SKIP_DECODER=1 needs decoder nodes behind a shared queue, which this version does not have yet; "
                  "unset it to serve with local decoders")
        return 2
    dispatcher = Dispatcher(config)
    server = waitress.create_server(
        create_app(config, dispatcher), host=config.host, port=config.port,
        threads=config.max_transcripts_parallel + 4, ident="async-engine",
    )
    stopping = threading.Event()
    drained = threading.Event()
    stopped = threading.Event()

    def drain_then_stop() -> None:
        log.info("stopping: draining %d job(s) in flight", dispatcher.in_flight)
        try:
            dispatcher.drain(config.request_timeout_seconds)
        finally:
            drained.set()
            _thread.interrupt_main()  # runs on_signal in the main thread, which ends waitress's loop

    def on_signal(signum: int, _frame) -> None:
        if drained.is_set() and not stopped.is_set():
            stopped.set()
            raise KeyboardInterrupt  # waitress's run() returns on it, once
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=drain_then_stop, name="drain", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("listening on http://%s:%d", config.host, config.port)
    try:
        server.run()
    except (OSError, KeyboardInterrupt):
        if not stopping.is_set():
            raise
    finally:
        stopped.set()  # signals from here on are ignored: the cleanup below must run to the end
        server.close()
        dispatcher.stop()
        log.info("stopped")
    return 0
