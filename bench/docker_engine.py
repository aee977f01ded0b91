"""A Docker engine of our own for the image tests and the image benchmark: Debian's dockerd, started
with no bridge and no iptables rules (containers use the host's network namespace, or none), on a
socket and exec root of its own, stopped by its pid when done.

Its images live in a data root of their own (DATA_ROOT) and are kept between runs, so that a second
run reuses the base image and the build cache; containers, volumes and networks are not kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import requests

from bench.daemon_proc import terminate

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path("/var/lib/async-engine-test-docker")
CI_REDIS_IMAGE = "async-engine-ci-redis:bookworm"


def missing_tools(compose: bool = False) -> str | None:
    """Why the engine cannot run here, or None. run-tests.sh installs docker.io and docker-compose as root."""
    if os.geteuid() != 0:
        return "the Docker tests start their own dockerd, which needs root"
    for tool in ("dockerd", "docker", "containerd", "runc") + (("docker-compose",) if compose else ()):
        if shutil.which(tool) is None:
            return (f"{tool} not found: Debian's docker.io and docker-compose packages (run-tests.sh installs "
                    "them as root)")
    if not Path("/etc/debian_version").is_file() or not Path("/etc/debian_version").read_text().startswith("12"):
        return "packaging/build-deb builds the image's package on Debian 12 only"
    return None


class DockerEngine:
    """A dockerd this process started; `docker(...)` runs the CLI against it."""

    def __init__(self, run_dir: Path, data_root: Path = DATA_ROOT) -> None:
        self.run_dir = run_dir
        self.data_root = data_root
        self.socket = run_dir / "docker.sock"
        self.log_path = run_dir / "dockerd.log"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        self.process: subprocess.Popen | None = None
        self.children: list[int] = []

    def start(self, timeout: float = 60.0) -> None:
        self.data_root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--host", f"unix://{self.socket}", "--pidfile", str(self.run_dir / "dockerd.pid"),
                 "--exec-root", str(self.run_dir / "exec"), "--data-root", str(self.data_root),
                 "--bridge=none", "--iptables=false"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.socket.exists() and self.docker("version", check=False).returncode == 0:
                self.children = _children(self.process.pid)  # its containerd
                return
            time.sleep(0.25)
        raise TimeoutError(f"dockerd did not answer within {timeout} s:\n{self.log_tail()}")

    def docker(self, *args: str, check: bool = True, timeout: float = 600,
               input: str | None = None) -> subprocess.CompletedProcess:
        """The docker CLI against this engine; output captured as text."""
        done = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def reset(self) -> None:
        """Remove what an interrupted earlier run left in the data root: containers, volumes, networks."""
        containers = self.docker("ps", "--all", "--quiet").stdout.split()
        if containers:
            self.docker("rm", "--force", "--volumes", *containers)
        self.docker("volume", "prune", "--force")
        self.docker("network", "prune", "--force")

    def inspect(self, name: str) -> dict:
        return json.loads(self.docker("inspect", name).stdout)[0]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to the dockerd we started (it stops its containerd), SIGKILL if it hangs; then its mounts go."""
        if self.process is not None:
            terminate(self.process, timeout)
        for pid in self.children:  # a managed containerd outliving a killed dockerd
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.unmount()

    def mounts(self) -> list[str]:
        """Mount points under the run directory: dockerd leaves its network namespace file mounted."""
        with open("/proc/self/mounts") as table:
            points = [line.split()[1] for line in table]
        return [p for p in points if p == str(self.run_dir) or p.startswith(f"{self.run_dir}/")]

    def unmount(self) -> None:
        for point in reversed(self.mounts()):
            subprocess.run(["umount", point], capture_output=True)

    def leftovers(self) -> list[str]:
        """Processes of this engine still alive, and its mounts (after stop: none)."""
        alive = [f"mount {point}" for point in self.mounts()]
        for pid in ([self.process.pid] if self.process else []) + self.children:
            with contextlib.suppress(OSError):
                state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
                if state != "Z":
                    alive.append(f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}")
        return alive


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().split(")")[-1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@contextlib.contextmanager
def docker_engine(data_root: Path = DATA_ROOT) -> Iterator[DockerEngine]:
    """Start an engine in a short temporary directory (unix socket paths are limited); stop it after."""
    run_dir = Path(tempfile.mkdtemp(prefix="ae-docker-", dir="/tmp"))
    engine = DockerEngine(run_dir, data_root)
    try:
        engine.start()
        engine.reset()
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def build_images(engine: DockerEngine, *extra: str) -> tuple[str, float]:
    """packaging/build-image on the local base (no registry here); returns the CPU tag and seconds taken."""
    started = time.monotonic()
    done = subprocess.run([str(REPO_ROOT / "packaging" / "build-image"), "--local-base", *extra,
                           "--", "--network", "host"], env=engine.env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"packaging/build-image failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout.split()[0], time.monotonic() - started


def build_redis_standin(engine: DockerEngine) -> str:
    """The stand-in for the official redis image (packaging/ci/redis-standin.Dockerfile), on the local base."""
    dockerfile = (REPO_ROOT / "packaging" / "ci" / "redis-standin.Dockerfile").read_text()
    engine.docker("build", "--network", "host", "--build-arg", "BASE_IMAGE=async-engine-base:bookworm",
                  "-t", CI_REDIS_IMAGE, "-", input=dockerfile)
    return CI_REDIS_IMAGE


class Container:
    """One `docker run -d --network host` of the image, its server on the loopback port given."""

    def __init__(self, engine: DockerEngine, image: str, port: int, *run_args: str, **env: str) -> None:
        self.engine = engine
        self.name = f"ae-test-{uuid.uuid4().hex[:10]}"
        self.url = f"http://127.0.0.1:{port}"
        environment = {"ASYNC_ENGINE_HOST": "127.0.0.1", "ASYNC_ENGINE_PORT": str(port), **env}
        flags = [f"--env={k}={v}" for k, v in environment.items()]
        self.started = time.monotonic()
        engine.docker("run", "-d", "--name", self.name, "--network", "host",
                      f"--ulimit=nofile={resource.getrlimit(resource.RLIMIT_NOFILE)[1]}", *flags, *run_args, image)

    def state(self) -> dict:
        return self.engine.inspect(self.name)["State"]

    def wait_healthy(self, timeout: float = 120.0) -> float:
        """Seconds from `docker run` to the first 200 on /health."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    return time.monotonic() - self.started
            if not self.state()["Running"]:
                raise RuntimeError(f"container {self.name} stopped:\n{self.logs()}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        done = self.engine.docker("logs", self.name, check=False)
        return (done.stdout + done.stderr)[-6000:]

    def remove(self) -> None:
        """Gone with its anonymous volumes; named volumes are the caller's."""
        self.engine.docker("rm", "--force", "--volumes", self.name, check=False)
