"""`async-engine worker`: a worker node of shared mode, with no HTTP API.

Today's process tree (supervisor, inference and decoder processes) fed from Redis by a WorkerNode,
plus a /metrics listener on METRICS_PORT for Prometheus and the streaming API on ASYNC_ENGINE_STREAM_PORT
(API nodes relay their streams here). SIGTERM or SIGINT: take no more jobs,
finish the ones in hand (up to REQUEST_TIMEOUT_SECONDS), hand back anything left, stop the tree.
"""

from __future__ import annotations

import logging
import signal
import threading

from daemon import logs, malloc, metrics
from daemon.config import ConfigError, DaemonConfig
from daemon.shared.connection import connect
from daemon.shared.nodes import Nodes
from daemon.shared.queue import Queue
from daemon.shared.redis_store import RedisJobStore
from daemon.shared.worker_node import build_worker_node
from daemon.workers.leftovers import remove_dead_trees

log = logging.getLogger("async_engine.worker")


def run_worker(config: DaemonConfig) -> int:
    malloc.map_large_blocks_alone()
    logs.configure(config.log_level)
    if config.redis_url is None:
        raise ConfigError("`async-engine worker` takes jobs from Redis: set REDIS_URL (e.g. redis://redis:6379/0); "
                          "on one host, `async-engine serve` transcribes by itself")
    if config.skip_decoder:
        raise ConfigError("SKIP_DECODER=1 makes an API node, which `async-engine worker` is not: unset it here")
    metrics_dir = metrics.start_tree()
    try:
        return _run(config)
    finally:
        metrics.stop_tree(metrics_dir)


def _run(config: DaemonConfig) -> int:
    remove_dead_trees()
    client = connect(config.redis_url)
    store = RedisJobStore(client)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    dispatcher, webhooks, node = build_worker_node(config, store, Nodes(client, config.worker_node_timeout),
                                                   Queue(client))
    try:
        listener = metrics.serve_metrics(config.host, config.metrics_port, node)
    except OSError as exc:
        dispatcher.stop()
        log.error("cannot listen on %s:%d for /metrics (METRICS_PORT): %s", config.host, config.metrics_port,
                  exc.strerror or exc)
        return 2
    streams = None
    if config.stream_port is not None:
        from daemon.stream.server import StreamServer

        try:
            streams = StreamServer(config, dispatcher)
        except OSError as exc:
            listener.shutdown()
            dispatcher.stop()
            log.error("cannot listen on %s:%d for streams (ASYNC_ENGINE_STREAM_PORT): %s", config.host,
                      config.stream_port, exc.strerror or exc)
            return 2
        node.stream_endpoint = streams.endpoint
        streams.start()
        log.info("streams on ws://%s:%d/v3/ws", *streams.address)
    webhooks.start()
    node.start()
    log.info("metrics on http://%s:%d/metrics", config.host, config.metrics_port)
    while not stop.wait(3600):
        pass
    log.info("stopping: finishing the job(s) in hand; nothing new is taken")
    try:
        if streams is not None:
            streams.stop()
        node.drain(config.request_timeout_seconds)
    finally:
        listener.shutdown()
        dispatcher.stop()
        webhooks.stop()
        store.close()
        log.info("stopped")
    return 0
