"""The Docker images and the Compose stack, built and run on a real Docker engine.

A dockerd of the test's own (Debian's docker.io: no bridge, no iptables rules, containers on the host's
network) builds Dockerfile.cpu from the Debian package on a debootstrap base (no registry here), then:
the container runs as the service user, answers /health, turns `healthy` by its own HEALTHCHECK, gives
the same words as the daemon on the host, drains a request on `docker stop`, and finishes a job accepted
before `docker kill` once restarted on the same data volume. Then docker-compose.yml (with the CI
override packaging/compose-ci.yml) brings up Redis, an API node and two workers: a transcription goes
through, a worker killed mid-request loses no request, and `down` leaves nothing. Last, the engine is
stopped by its pid and nothing of it is left: no process, container, volume, network or iptables rule.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from bench.cluster import wait_until
from bench.docker_engine import (REPO_ROOT, Container, DockerEngine, build_images, build_redis_standin, docker_engine,
                                 missing_tools)
from bench.wer import normalise
from daemon_support import audio_server, free_port, running_daemon
from synth import write_short_and_long

pytestmark = pytest.mark.skipif(missing_tools(compose=True) is not None,
                                reason=f"Docker tests cannot run: {missing_tools(compose=True)}")


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    with docker_engine() as started:
        yield started
        # Images stay (the next run's cache); what earlier builds left untagged goes.
        started.docker("image", "prune", "--force", check=False)


@pytest.fixture(scope="module")
def image(engine) -> str:
    tag, _seconds = build_images(engine)
    return tag


@pytest.fixture(scope="module")
def files(tmp_path_factory, installed_model) -> Path:
    return write_short_and_long(tmp_path_factory.mktemp("docker-audio"))


@pytest.fixture(scope="module")
def origin(files) -> Iterator[str]:
    with audio_server(files) as url:
        yield url


@pytest.fixture(scope="class")
def served(engine, image) -> Iterator[Container]:
    """One container of the image; health checked every 2 s (the image's command, sooner than its 30 s)."""
    container = Container(engine, image, free_port(), "--health-interval=2s",
                          ASYNC_ENGINE_STREAM_PORT=str(free_port()))
    try:
        container.wait_healthy()
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="module")
def eval_dir_or_none() -> Path | None:
    """../shared/eval when present: its clips join the comparison; without it the generated clip runs alone."""
    directory = REPO_ROOT.parent / "shared" / "eval"
    return directory if (directory / "dev.tsv").is_file() else None


def _words(answer: requests.Response) -> str:
    assert answer.status_code == 200, answer.text[:500]
    return normalise(answer.json()["blob"])


class TestOneContainer:
    """Tests that share one running container of the image."""

    def test_the_container_runs_as_the_service_user(self, engine, served):
        assert engine.inspect(served.name)["Config"]["User"] == "async-engine"
        uid = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "id", engine.inspect(served.name)["Image"],
                            "-u").stdout.strip()
        assert uid != "0"
        # Every process of the server (front, supervisor, inference, decoder), as the host sees them.
        top = engine.docker("top", served.name, "-eo", "pid,uid,comm").stdout.splitlines()[1:]
        assert len(top) >= 3, top
        assert {line.split()[1] for line in top} == {uid}, top


    def test_the_images_healthcheck_turns_healthy(self, engine, served):
        def healthy() -> bool:
            return served.state()["Health"]["Status"] == "healthy"

        wait_until(healthy, 60, step=0.5)
        log = served.state()["Health"]["Log"]
        assert log and log[-1]["ExitCode"] == 0


    def test_the_image_transcribes_like_the_daemon_on_the_host(self, served, origin, tmp_path, eval_dir_or_none):
        urls = [f"{origin}/short.wav"]
        with audio_server(eval_dir_or_none) if eval_dir_or_none else contextlib.nullcontext() as eval_url:
            if eval_url:  # recorded speech: the JFK clip and the first dev clips
                urls += [f"{eval_url}/jfk/jfk.flac"] + [
                    f"{eval_url}/{line.split(chr(9))[0]}"
                    for line in (eval_dir_or_none / "dev.tsv").read_text().splitlines()[:3]]
            in_image = [_words(requests.post(served.url + "/transcribe/url", json={"audio_url": u}, timeout=300))
                        for u in urls]
            with running_daemon(tmp_path) as host:
                host.wait_healthy()
                on_host = [_words(host.transcribe({"audio_url": u})) for u in urls]
        assert in_image == on_host
        assert "weekly report" in in_image[0] and "finance team" in in_image[0]


def _windows_in_flight(container: Container) -> int:
    try:
        workers = requests.get(container.url + "/health", timeout=5).json().get("workers", [])
    except (requests.RequestException, ValueError):
        return 0
    return sum(w.get("windows", 0) for w in workers)


def test_docker_stop_drains_the_request_in_flight(engine, image, origin):
    container = Container(engine, image, free_port(), ASYNC_ENGINE_STREAM_PORT=str(free_port()))
    try:
        container.wait_healthy()
        with futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(requests.post, container.url + "/transcribe/url",
                                  json={"audio_url": f"{origin}/long.wav"}, timeout=300)
            wait_until(lambda: _windows_in_flight(container) > 0 or pending.done(), 60, step=0.05)
            assert not pending.done(), "the request finished before the stop: nothing was drained"
            engine.docker("stop", "--time", "300", container.name)
            answer = pending.result(timeout=300)
        assert "projector" in _words(answer)
        state = container.state()
        assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False), container.logs()
        assert "draining" in container.logs().lower()
    finally:
        container.remove()


def test_a_job_accepted_before_docker_kill_completes_after_a_restart(engine, image, origin):
    volume = f"ae-test-data-{os.getpid()}"
    engine.docker("volume", "create", volume)
    port = free_port()
    container = Container(engine, image, port, f"--volume={volume}:/var/lib/async-engine/data",
                          ASYNC_ENGINE_STREAM_PORT=str(free_port()))
    try:
        container.wait_healthy()
        accepted = requests.post(container.url + "/v2/transcript", json={"audio_url": f"{origin}/long.wav"}, timeout=30)
        assert accepted.status_code == 200, accepted.text
        job = accepted.json()["id"]
        engine.docker("kill", container.name)
        wait_until(lambda: container.state()["Status"] == "exited", 30, step=0.1)
        engine.docker("start", container.name)  # the same container: the same data volume
        container.started = time.monotonic()
        container.wait_healthy()
        found: dict = {}

        def done() -> bool:
            nonlocal found
            found = requests.get(f"{container.url}/v2/transcript/{job}", timeout=10).json()
            return found.get("status") in ("completed", "error")

        wait_until(done, 300, step=0.5)
        assert found["status"] == "completed", found
        assert "projector" in normalise(found["text"])
    finally:
        container.remove()
        engine.docker("volume", "rm", "--force", volume, check=False)


# --- Compose ---------------------------------------------------------------------------------------------


class Stack:
    """docker-compose.yml plus packaging/compose-ci.yml as one project, on ports of our choosing."""

    def __init__(self, engine: DockerEngine, work: Path) -> None:
        self.engine = engine
        self.project = f"ae-ci-{os.getpid()}"
        self.api_port = free_port()
        self.metrics_ports = (free_port(), free_port())
        self.env = {**engine.env, "CI_REDIS_PORT": str(free_port()), "CI_API_PORT": str(self.api_port),
                    "CI_STREAM_PORT": str(free_port()), "CI_METRICS_PORT_1": str(self.metrics_ports[0]),
                    "CI_METRICS_PORT_2": str(self.metrics_ports[1]),
                    "CI_NOFILE": str(resource.getrlimit(resource.RLIMIT_NOFILE)[1])}
        self.url = f"http://127.0.0.1:{self.api_port}"
        merged = yaml.safe_load(self.compose("-f", str(REPO_ROOT / "docker-compose.yml"),
                                             "-f", str(REPO_ROOT / "packaging" / "compose-ci.yml"), "config").stdout)
        for service in merged["services"].values():  # docker drops published ports on the host network anyway
            if service.get("network_mode") == "host":
                service.pop("ports", None)
        self.file = work / "compose-ci-merged.yml"
        self.file.write_text(yaml.safe_dump(merged))

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker-compose", "--project-name", self.project, "--profile", "cpu", *args],
                              cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=600)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done

    def up(self) -> None:
        self.compose("-f", str(self.file), "up", "--detach", "--no-build")

    def down(self) -> subprocess.CompletedProcess:
        return self.compose("-f", str(self.file), "down", "--volumes", "--remove-orphans", "--timeout", "120")

    def container(self, service: str) -> str:
        return self.compose("-f", str(self.file), "ps", "--quiet", service).stdout.strip()

    def nodes(self) -> list[dict]:
        try:
            return requests.get(self.url + "/health", timeout=5).json().get("nodes", [])
        except (requests.RequestException, ValueError):
            return []


@pytest.fixture(scope="class")
def stack(engine, image, tmp_path_factory) -> Iterator[Stack]:
    build_redis_standin(engine)
    made = Stack(engine, tmp_path_factory.mktemp("compose"))
    try:
        made.up()
        wait_until(lambda: sum(n["ready"] for n in made.nodes()) == 2, 180, step=0.5)
        yield made
    finally:
        made.down()


class TestCompose:
    """One Compose stack, brought up once: the tests run in order and the last brings it down."""

    def test_compose_brings_up_redis_an_api_node_and_two_workers(self, stack, origin):
        services = {s: stack.engine.inspect(stack.container(s)) for s in ("redis", "api", "worker", "worker-2")}
        assert all(c["State"]["Running"] for c in services.values())
        api_env = dict(v.split("=", 1) for v in services["api"]["Config"]["Env"])
        assert api_env["SKIP_DECODER"] == "1"
        wait_until(lambda: all(stack.engine.inspect(stack.container(s))["State"]["Health"]["Status"] == "healthy"
                               for s in ("redis", "worker", "worker-2")), 60, step=0.5)
        answer = requests.post(stack.url + "/transcribe/url", json={"audio_url": f"{origin}/short.wav"}, timeout=300)
        assert "weekly report" in _words(answer)


    def test_a_worker_killed_mid_request_loses_no_request(self, stack, origin):
        with futures.ThreadPoolExecutor(2) as pool:
            pending = [pool.submit(requests.post, stack.url + "/transcribe/url", json={"audio_url": f"{origin}/long.wav"},
                                   timeout=300) for _ in range(2)]
            wait_until(lambda: sum(n["running"] for n in stack.nodes()) == 2, 60, step=0.05)
            stack.engine.docker("kill", stack.container("worker"))  # the node and its whole process tree
            answers = [p.result(timeout=300) for p in pending]
        assert [a.status_code for a in answers] == [200, 200], [a.text[:300] for a in answers]
        assert _words(answers[0]) == _words(answers[1])
        assert "projector" in _words(answers[0])


    def test_compose_down_leaves_nothing(self, stack):
        stack.down()
        label = f"label=com.docker.compose.project={stack.project}"
        assert stack.engine.docker("ps", "--all", "--quiet", "--filter", label).stdout.strip() == ""
        assert stack.engine.docker("volume", "ls", "--quiet", "--filter", label).stdout.strip() == ""
        assert stack.engine.docker("network", "ls", "--quiet", "--filter", label).stdout.strip() == ""


def test_nothing_of_the_engine_is_left_behind(engine):
    """Runs last: no container or volume of ours, then the engine stopped by its pid, and nothing of it left."""
    assert engine.docker("ps", "--all", "--quiet").stdout.strip() == ""
    assert engine.docker("volume", "ls", "--quiet").stdout.strip() == ""
    networks = set(engine.docker("network", "ls", "--format", "{{.Name}}").stdout.split())
    assert networks == {"host", "none"}, networks
    engine.docker("image", "prune", "--force")
    engine.stop()
    assert engine.leftovers() == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "docker0" not in links and " br-" not in links
    if shutil.which("iptables"):
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
        assert "DOCKER" not in rules, rules
