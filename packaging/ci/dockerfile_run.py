"""Execute a Dockerfile's final stage inside a prepared root with chroot, without a Docker engine.

Used by packaging/image-dryrun: the root stands in for the base image (a Debian bookworm root with
python3.11 at /usr/local/bin/python, like python:3.11-slim-bookworm). ARG, ENV, USER, WORKDIR, COPY
and RUN are carried out in order (RUN with /bin/sh -c, as the current USER, with the image's
environment only); then CMD is started the way `docker run` would, the HEALTHCHECK command is run
inside the root until it passes, and the STOPSIGNAL must stop the server cleanly.

Usage: python dockerfile_run.py ROOT CONTEXT DOCKERFILE [--build-arg K=V] [--env K=V] [--run-env K=V]
--env adds run-time variables (like `docker run -e`); --build-arg overrides ARG defaults; --run-env
adds a variable to every RUN (the one deviation from a real build, e.g. PIP_FIND_LINKS).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from lint_images import parse_dockerfile, stages_of  # noqa: E402

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def log(message: str) -> None:
    print(f"  dockerfile-run: {message}", flush=True)


class Runner:
    def __init__(self, root: Path, context: Path, build_args: dict[str, str], run_env: dict[str, str]) -> None:
        self.root, self.context, self.build_args, self.run_env = root, context, build_args, run_env
        self.env = dict(BASE_ENV)
        self.args: dict[str, str] = {}
        self.user = "root"
        self.workdir = "/"
        self.cmd: list[str] = []
        self.healthcheck: list[str] = []
        self.stopsignal = "SIGTERM"
        self.exposed: list[str] = []

    def variables(self) -> dict[str, str]:
        return {**self.args, **self.env}

    def chroot(self, argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        """argv in the root as the current USER and WORKDIR, with exactly env."""
        wrapper = ["chroot", str(self.root)]
        user, _, group = self.user.partition(":")
        if user not in ("root", "0"):
            wrapper += ["setpriv", f"--reuid={user}", f"--regid={group or user}", "--init-groups", "--"]
        env = {"HOME": self._home(user), **env}  # Docker: HOME from /etc/passwd unless ENV sets it
        script = 'cd "$1" && shift && exec "$@"'
        return subprocess.Popen(wrapper + ["/bin/sh", "-c", script, "sh", self.workdir, *argv],
                                env=env, **kwargs)

    def _home(self, user: str) -> str:
        for line in (self.root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return fields[5]
        return "/"

    def run(self, text: str, line: int) -> None:
        argv = json.loads(text) if text.startswith("[") else ["/bin/sh", "-c", text]
        env = {**self.env, **{k: v for k, v in self.args.items() if k not in self.env}, **self.run_env}
        started = time.monotonic()
        proc = self.chroot(argv, env)
        if proc.wait() != 0:
            raise SystemExit(f"dockerfile-run: RUN at line {line} failed with status {proc.returncode}")
        log(f"RUN at line {line}: ok in {time.monotonic() - started:.0f} s")

    def copy(self, args: str, line: int) -> None:
        words = [expand(w, self.variables()) for w in shlex.split(args) if not w.startswith("--")]
        if any(w.startswith("--from") for w in args.split()):
            raise SystemExit(f"dockerfile-run: line {line}: COPY --from is not supported here")
        *sources, dest = words
        target = self.root / expand(dest, self.variables()).lstrip("/")
        if self.workdir and not dest.startswith("/"):
            target = self.root / self.workdir.lstrip("/") / dest
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for source in sources:
            src = self.context / source
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True, ignore=ignore)
            else:
                if dest.endswith("/") or len(sources) > 1:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
        log(f"COPY at line {line}: {' '.join(sources)} -> {dest}")

    def execute(self, dockerfile: Path) -> None:
        instructions, problems = parse_dockerfile(dockerfile.read_text())
        global_args, stages, more = stages_of(instructions)
        if problems or more:
            raise SystemExit("dockerfile-run: " + "; ".join(problems + more))
        self.args.update({k: self.build_args.get(k, v) for k, v in global_args.items()})
        for ins in stages[-1].instructions:
            if ins.keyword == "ARG":
                key, _, default = ins.args.partition("=")
                self.args[key] = self.build_args.get(key, expand(default, self.variables()))
            elif ins.keyword == "ENV":
                for word in shlex.split(ins.args):
                    key, _, value = word.partition("=")
                    self.env[key] = expand(value, self.variables())
            elif ins.keyword == "USER":
                self.user = expand(ins.args, self.variables())
            elif ins.keyword == "WORKDIR":
                self.workdir = expand(ins.args, self.variables())
                (self.root / self.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                self.copy(ins.args, ins.line)
            elif ins.keyword == "RUN":
                self.run(ins.args, ins.line)
            elif ins.keyword == "CMD":
                self.cmd = json.loads(ins.args) if ins.args.startswith("[") else ["/bin/sh", "-c", ins.args]
            elif ins.keyword == "HEALTHCHECK":
                command = ins.args.partition("CMD")[2].strip()
                self.healthcheck = json.loads(command) if command.startswith("[") else ["/bin/sh", "-c", command]
            elif ins.keyword == "STOPSIGNAL":
                self.stopsignal = ins.args
            elif ins.keyword == "EXPOSE":
                self.exposed += ins.args.split()
            else:
                log(f"line {ins.line}: {ins.keyword} not carried out here")

    def serve(self, run_env: dict[str, str], log_path: Path) -> None:
        env = {**self.env, **run_env}
        log(f"CMD {self.cmd} as {self.user} in {self.workdir}; port {env.get('ASYNC_ENGINE_PORT')}")
        with open(log_path, "wb") as out:
            proc = self.chroot(self.cmd, env, stdout=out, stderr=subprocess.STDOUT)
        try:
            started = time.monotonic()
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"dockerfile-run: the CMD exited with {proc.returncode} (log: {log_path})")
                if time.monotonic() - started > 180:
                    raise SystemExit("dockerfile-run: the HEALTHCHECK did not pass within 180 s")
                check = self.chroot(self.healthcheck, env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if check.wait() == 0:
                    break
                time.sleep(2)
            log(f"HEALTHCHECK passed after {time.monotonic() - started:.0f} s")
        finally:
            if proc.poll() is None:
                proc.send_signal(getattr(signal, self.stopsignal))
                try:
                    status = proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise SystemExit(f"dockerfile-run: {self.stopsignal} did not stop the server within 120 s")
                if status != 0:
                    raise SystemExit(f"dockerfile-run: the server exited with {status} after {self.stopsignal}")
                log(f"{self.stopsignal}: the server exited 0")


def pairs(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("context", type=Path)
    parser.add_argument("dockerfile", type=Path)
    parser.add_argument("--build-arg", action="append", default=[])
    parser.add_argument("--env", action="append", default=[], help="run-time variable of the CMD")
    parser.add_argument("--run-env", action="append", default=[], help="extra variable of every RUN")
    parser.add_argument("--log", type=Path, default=Path("/dev/null"))
    options = parser.parse_args()
    runner = Runner(options.root.resolve(), options.context.resolve(), pairs(options.build_arg), pairs(options.run_env))
    runner.execute(options.dockerfile)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    runner.serve({"ASYNC_ENGINE_PORT": str(port), "ASYNC_ENGINE_HOST": "127.0.0.1", **pairs(options.env)}, options.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
