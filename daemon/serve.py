"""`async-engine serve`: the whole process tree behind one command.

The front (this process) runs waitress with the Falcon app; the supervisor and its workers are
child processes. With REDIS_URL the jobs live in Redis (shared mode): SKIP_DECODER=1 makes this an
API node (HTTP only, no model), otherwise the host is an API node and a worker node at once. SIGTERM or SIGINT drains: new jobs are refused, jobs in flight finish (up to
REQUEST_TIMEOUT_SECONDS), then the workers stop and no shared memory is left behind.
"""

from __future__ import annotations

import _thread
import logging
import resource
import signal
import threading
import time
from dataclasses import replace

from daemon import logs, malloc, metrics
from daemon.config import DaemonConfig
from daemon.http.app import create_app, error_body
from daemon.http.bodies import MAX_BODY_BYTES, MULTIPART_OVERHEAD_BYTES
from daemon.http.server import HttpServer
from daemon.jobs.scheduler import Scheduler
from daemon.shared.api_node import SharedScheduler
from daemon.shared.connection import connect
from daemon.shared.nodes import Nodes
from daemon.shared.queue import Queue
from daemon.shared.redis_store import RedisJobStore
from daemon.shared.worker_node import build_worker_node
from daemon.jobs.sqlite_store import DataDirInUse, SqliteJobStore
from daemon.jobs.webhooks import Webhooks
from daemon.workers.leftovers import remove_dead_trees

log = logging.getLogger("async_engine.serve")
_RESERVED_DESCRIPTORS = 512
API_NODE_THREADS = 64


def serve(config: DaemonConfig) -> int:
    malloc.map_large_blocks_alone()  # first: before any thread makes an arena
    logs.configure(config.log_level)
    metrics_dir = metrics.start_tree()
    try:
        return _serve(config)
    finally:
        metrics.stop_tree(metrics_dir)


def _serve(config: DaemonConfig) -> int:
    remove_dead_trees()
    try:
        parts = _shared_parts(config) if config.redis_url else _embedded_parts(config)
    except DataDirInUse as exc:
        log.error("%s", exc)
        return 2
    store, dispatcher, scheduler, webhooks, node, nodes = parts
    limits = replace(config.http, max_connections=_raise_descriptor_limit(config.http.max_connections))
    uploads = {"/v2/upload": config.download.max_bytes,
               "/v1/audio/transcriptions": config.download.max_bytes + MULTIPART_OVERHEAD_BYTES}
    # a synchronous request holds a thread while it waits: on an API node, for any worker node's slots
    threads = config.max_transcripts_parallel + 4 if not config.redis_url else max(API_NODE_THREADS,
                                                                                   config.max_transcripts_parallel + 4)
    try:
        server = HttpServer(create_app(config, scheduler, store, scheduler if config.redis_url else dispatcher,
                                       None if config.redis_url else dispatcher),
                            config.host, config.port, threads=threads, limits=limits, max_body_bytes=MAX_BODY_BYTES,
                            uploads=uploads, error_body=error_body)
    except OSError as exc:  # the port is taken, or the host is not ours
        if dispatcher is not None:
            dispatcher.stop()
        store.close()
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 2
    try:
        streams = _stream_server(config, dispatcher, nodes)
    except OSError as exc:
        server.close()
        if dispatcher is not None:
            dispatcher.stop()
        store.close()
        log.error("cannot listen on %s:%d (ASYNC_ENGINE_STREAM_PORT): %s", config.host, config.stream_port,
                  exc.strerror or exc)
        return 2
    if webhooks is not None:
        webhooks.start()
    scheduler.start()
    if streams is not None:
        streams.start()
    if node is not None:
        if streams is not None:
            node.stream_endpoint = streams.endpoint
        node.start()
    stopping = threading.Event()
    drained = threading.Event()
    stopped = threading.Event()

    def drain_then_stop() -> None:
        log.info("stopping: draining the job(s) in flight; queued jobs stay queued")
        deadline = time.monotonic() + config.request_timeout_seconds
        try:
            if streams is not None:
                streams.stop()  # live streams have no end to wait for: they are told to reconnect elsewhere
            scheduler.drain(config.request_timeout_seconds)
            if node is not None:
                node.drain(config.request_timeout_seconds)
            if dispatcher is not None:
                dispatcher.drain(max(0.0, deadline - time.monotonic()))
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
    for host, port in server.addresses:
        log.info("listening on http://%s:%d", host, port)
    if streams is not None:
        log.info("streams on ws://%s:%d/v3/ws", *streams.address)
    try:
        server.run()
    except (OSError, KeyboardInterrupt):
        if not stopping.is_set():
            raise
    finally:
        stopped.set()  # signals from here on are ignored: the cleanup below must run to the end
        server.close()
        if streams is not None:
            streams.stop()
        scheduler.drain(0)
        if dispatcher is not None:
            dispatcher.stop()
        if webhooks is not None:
            webhooks.stop()
        store.close()
        log.info("stopped")
    return 0


def _stream_server(config: DaemonConfig, dispatcher, nodes: Nodes | None):
    """The WebSocket streaming API, where it is on (ASYNC_ENGINE_STREAM_PORT); None where it is off. Streams run
    on this host's workers, or an API node's on the worker nodes'."""
    if config.stream_port is None:
        return None
    from daemon.stream.server import StreamServer  # websockets: only where streams are served

    return StreamServer(config, dispatcher, nodes if dispatcher is None else None)


def _embedded_parts(config: DaemonConfig) -> tuple:
    """One host: SQLite store and queue, the local process tree."""
    from daemon.workers.dispatcher import Dispatcher  # here: an API node never imports the workers (torch)

    store = SqliteJobStore(config.data_dir)
    dispatcher = Dispatcher(config)
    webhooks = Webhooks(store, config.download)
    return store, dispatcher, Scheduler(config, store, dispatcher, on_finished=webhooks.job_finished), webhooks, None, None


def _shared_parts(config: DaemonConfig) -> tuple:
    """Shared mode: the store and queue in Redis. An API node (SKIP_DECODER=1) stops there: no model, no
    processes. Otherwise this host is a worker node too, in the same tree (what `async-engine worker` runs)."""
    client = connect(config.redis_url)
    store, nodes, queue = RedisJobStore(client), Nodes(client, config.worker_node_timeout), Queue(client)
    if config.skip_decoder:
        log.info("API node (SKIP_DECODER=1): jobs go to the worker nodes through Redis")
        return store, None, SharedScheduler(config, store, nodes, queue), None, None, nodes
    dispatcher, webhooks, node = build_worker_node(config, store, nodes, queue)
    return store, dispatcher, SharedScheduler(config, store, nodes, queue, local=dispatcher), webhooks, node, nodes


def _raise_descriptor_limit(connections: int) -> int:
    """The connections this process can hold: each is a descriptor, and downloads, queues and model files
    need _RESERVED_DESCRIPTORS more. Raises the soft limit (often 1024 in a shell) towards the hard one; a
    hard limit too low for HTTP_MAX_CONNECTIONS lowers it, with a warning, rather than failing accept()."""
    wanted = connections + _RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return connections
    new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    if new_soft >= wanted:
        return connections
    affordable = max(16, new_soft - _RESERVED_DESCRIPTORS)
    log.warning("the open-file limit (ulimit -n, hard %d) is too low for HTTP_MAX_CONNECTIONS=%d; serving at most "
                "%d connections (raise LimitNOFILE or ulimit -Hn)", hard, connections, affordable)
    return affordable
