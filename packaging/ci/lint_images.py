"""Static checks of Dockerfile.cpu, Dockerfile.gpu, docker-compose.yml and .dockerignore.

This parses the files and checks what the project relies on, before anything is built; tests/test_docker.py
builds the CPU image and runs it and the Compose stack. Dockerfile.gpu is only checked here: its build
downloads torch's CUDA build (gigabytes). Usage: python lint_images.py REPO_ROOT
Exit status 1 with one line per problem.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}
JSON_FORM = {"CMD", "ENTRYPOINT", "SHELL"}


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> tuple[list[Instruction], list[str]]:
    """Logical instructions (continuations joined, comments dropped) and syntax problems."""
    problems: list[str] = []
    instructions: list[Instruction] = []
    escape = "\\"
    lines = text.splitlines()
    for raw in lines[:5]:  # parser directives come first
        match = re.match(r"#\s*escape\s*=\s*(\S)", raw)
        if match:
            escape = match.group(1)
    current, start = "", 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # comment lines inside a continuation are dropped
            continue
        if not current:
            start = number
        if raw.rstrip().endswith(escape):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        keyword, _, args = current.strip().partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        if keyword != keyword.upper():
            problems.append(f"line {start}: instruction {keyword!r} is not upper case")
        current = ""
    if current:
        problems.append(f"line {start}: the file ends inside a continued line")
    for ins in instructions:
        if ins.keyword not in INSTRUCTIONS:
            problems.append(f"line {ins.line}: unknown instruction {ins.keyword}")
        elif not ins.args:
            problems.append(f"line {ins.line}: {ins.keyword} without arguments")
        elif ins.keyword in JSON_FORM and ins.args.startswith("["):
            try:
                value = json.loads(ins.args)
                assert isinstance(value, list) and all(isinstance(v, str) for v in value)
            except (ValueError, AssertionError):
                problems.append(f"line {ins.line}: {ins.keyword} exec form is not a JSON array of strings")
        elif ins.keyword == "HEALTHCHECK" and ins.args != "NONE":
            options, _, command = ins.args.partition("CMD")
            for option in options.split():
                if not re.fullmatch(r"--(interval|timeout|start-period|start-interval|retries)=\S+", option):
                    problems.append(f"line {ins.line}: unknown HEALTHCHECK option {option}")
            command = command.strip()
            if not command:
                problems.append(f"line {ins.line}: HEALTHCHECK without CMD")
            elif command.startswith("["):
                try:
                    json.loads(command)
                except ValueError:
                    problems.append(f"line {ins.line}: HEALTHCHECK CMD exec form is not valid JSON")
        elif ins.keyword == "RUN" and not ins.args.startswith("["):
            try:
                shlex.split(ins.args, comments=False)
            except ValueError as exc:
                problems.append(f"line {ins.line}: RUN does not parse as shell words ({exc})")
    return instructions, problems


def stages_of(instructions: list[Instruction]) -> tuple[dict[str, str], list[Stage], list[str]]:
    """ARG defaults declared before the first FROM, the build stages, and problems."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    problems: list[str] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3):
                problems.append(f"line {ins.line}: FROM {ins.args!r} is not 'image[:tag] [AS name]'")
            stages.append(Stage(words[0], name))
        elif not stages:
            if ins.keyword != "ARG":
                problems.append(f"line {ins.line}: {ins.keyword} before the first FROM")
            else:
                key, _, value = ins.args.partition("=")
                global_args[key] = value
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        problems.append("no FROM")
    return global_args, stages, problems


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def check_dockerfile(repo: Path, path: Path, flavour: str, ignored) -> list[str]:
    instructions, problems = parse_dockerfile(path.read_text())
    global_args, stages, stage_problems = stages_of(instructions)
    problems += stage_problems
    if not stages:
        return problems
    names = {s.name for s in stages if s.name}
    for stage in stages:
        image = expand(stage.base, global_args)
        if image in names or image == "scratch":
            continue
        if "$" in image:
            problems.append(f"FROM {stage.base}: an ARG without a default")
            continue
        if "@sha256:" in image:
            continue
        repo_part, _, tag = image.rpartition(":")
        if not repo_part or "/" in tag:
            problems.append(f"FROM {image}: no tag (pin one)")
        elif tag == "latest":
            problems.append(f"FROM {image}: 'latest' is not a pin")
    final = stages[-1]
    by_kind: dict[str, list[Instruction]] = {}
    for ins in final.instructions:
        by_kind.setdefault(ins.keyword, []).append(ins)
    version = project_version(repo)

    users = by_kind.get("USER", [])
    if not users:
        problems.append("the final stage has no USER: the server would run as root")
    elif users[-1].args.split(":")[0] in ("root", "0"):
        problems.append(f"line {users[-1].line}: the last USER is root")
    env_text = " ".join(i.args for i in by_kind.get("ENV", []))
    runs = " ".join(i.args for i in by_kind.get("RUN", []))
    args = {i.args.partition("=")[0]: i.args.partition("=")[2] for i in by_kind.get("ARG", [])}
    if flavour == "cpu":
        # The image is the Debian package installed on Debian 12 (the release the package is built for).
        if global_args.get("BASE_IMAGE") != "debian:bookworm-slim" or final.base != "${BASE_IMAGE}":
            problems.append("the CPU image must be FROM ${BASE_IMAGE}, ARG BASE_IMAGE=debian:bookworm-slim")
        deb = f"packaging/build/dist/async-engine_{version}_amd64.deb"
        if args.get("DEB") != deb:
            problems.append(f"ARG DEB is {args.get('DEB')!r}, expected {deb} (setup.py's version)")
        if "apt-get install" not in runs or "/tmp/async-engine.deb" not in runs:
            problems.append("no RUN installs the package (apt-get install /tmp/async-engine.deb)")
        if "tiny.en" not in args.get("MODELS", ""):
            problems.append("ARG MODELS does not include the default model tiny.en")
        health = by_kind.get("HEALTHCHECK", [])
        if not health or health[-1].args == "NONE":
            problems.append("no HEALTHCHECK in the final stage")
        elif "/health" not in health[-1].args:
            problems.append(f"line {health[-1].line}: the HEALTHCHECK does not ask /health")
        if not any("9999" in e.args.split() for e in by_kind.get("EXPOSE", [])):
            problems.append("EXPOSE 9999 missing")
        cmd = by_kind.get("CMD", [])
        if not cmd or not cmd[-1].args.startswith("[") or json.loads(cmd[-1].args) != ["async-engine", "serve"]:
            problems.append('CMD is not ["async-engine", "serve"]')
        stop = by_kind.get("STOPSIGNAL", [])
        if stop and stop[-1].args not in ("SIGTERM", "15"):
            problems.append(f"STOPSIGNAL {stop[-1].args}: the server drains on SIGTERM")
        if "ASYNC_ENGINE_MODELS_DIR=/var/lib/async-engine/models" not in env_text:
            problems.append("ENV ASYNC_ENGINE_MODELS_DIR=/var/lib/async-engine/models missing")
    else:
        # The CPU image with torch's CUDA build: everything else (user, health, command) is inherited.
        if global_args.get("CPU_IMAGE") != f"async-engine:{version}-cpu" or final.base != "${CPU_IMAGE}":
            problems.append(f"the GPU image must be FROM ${{CPU_IMAGE}}, ARG CPU_IMAGE=async-engine:{version}-cpu")
        for reset in ("HEALTHCHECK", "CMD", "ENTRYPOINT", "STOPSIGNAL"):
            if reset in by_kind:
                problems.append(f"the GPU image sets {reset}: it inherits the CPU image's")
        if "ASYNC_ENGINE_DEVICES=auto" not in env_text:
            problems.append("the GPU image must set ASYNC_ENGINE_DEVICES=auto")
        if "NVIDIA_VISIBLE_DEVICES" not in env_text:
            problems.append("the GPU image does not set NVIDIA_VISIBLE_DEVICES")
        torch = args.get("TORCH_VERSION", "")
        if not torch.startswith("2.13.0"):
            problems.append(f"torch is not pinned to 2.13.0 (ARG TORCH_VERSION={torch!r})")
        if '"torch==$TORCH_VERSION"' not in runs or "torch.version.cuda" not in runs:
            problems.append("torch is not installed pinned and checked to be a CUDA build")

    # COPY/ADD sources must exist in the build context and not be excluded by .dockerignore.
    for ins in by_kind.get("COPY", []) + by_kind.get("ADD", []):
        words = [w for w in ins.args.split() if not w.startswith("--")]
        if any(w.startswith("--from") for w in ins.args.split()):
            continue
        for source in (expand(w, args) for w in words[:-1]):
            # packaging/build/ holds what a build script makes (the .deb); lint runs before it is built
            if not source.startswith("packaging/build/") and not (repo / source).exists():
                problems.append(f"line {ins.line}: COPY source {source} does not exist")
            elif ignored(source):
                problems.append(f"line {ins.line}: COPY source {source} is excluded by .dockerignore")
    return [f"{path.name}: {p}" for p in problems]


def dockerignore(repo: Path) -> tuple[list[str], list[str]]:
    path = repo / ".dockerignore"
    if not path.is_file():
        return [], [".dockerignore missing"]
    patterns = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    ignored = ignored_by(patterns)
    problems = [f".dockerignore does not exclude {p}" for p in (".venv", ".git", "bench/cache", "engine", "models")
                if not ignored(p)]
    return patterns, problems


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus '**') as a regular expression."""
    parts = []
    for segment in pattern.strip("/").split("/"):
        if segment == "**":
            parts.append(".*")
        else:
            parts.append("".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment))
    return re.compile("/".join(parts).replace(".*/", "(?:.*/)?"))


def ignored_by(patterns: list[str]):
    """Whether a path of the build context is excluded (a matched directory excludes its contents)."""
    compiled = [(p.startswith("!"), _pattern_regex(p.lstrip("!"))) for p in patterns]

    def ignored(relative: str) -> bool:
        relative = relative.strip("/")
        pieces = relative.split("/")
        prefixes = ["/".join(pieces[: i + 1]) for i in range(len(pieces))]
        result = False
        for negate, regex in compiled:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                result = not negate
        return result
    return ignored


def project_version(repo: Path) -> str:
    match = re.search(r'^\s*version\s*=\s*"([^"]+)"', (repo / "setup.py").read_text(), re.M)
    return match.group(1) if match else "?"


def check_compose(repo: Path) -> list[str]:
    path = repo / "docker-compose.yml"
    problems: list[str] = []
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return [f"docker-compose.yml: not valid YAML: {exc}"]
    allowed_top = {"services", "volumes", "networks", "configs", "secrets"}
    if "name" in doc:
        problems.append("top-level 'name': Debian's docker-compose 1.29 refuses it (.env sets COMPOSE_PROJECT_NAME)")
    env = (repo / ".env").read_text() if (repo / ".env").is_file() else ""
    if not re.search(r"^COMPOSE_PROJECT_NAME=async-engine$", env, re.M):
        problems.append(".env does not set COMPOSE_PROJECT_NAME=async-engine")
    for key in doc:
        if key not in allowed_top and not key.startswith("x-"):
            problems.append(f"unknown top-level key {key!r}")
    if "version" in doc:
        problems.append("'version' is obsolete in the Compose specification")
    services = doc.get("services") or {}
    # the old engine's shape: redis, an API node on 9999 (SKIP_DECODER=1), scalable workers per profile
    expected = {"api": (None, "Dockerfile.cpu"), "worker": ("cpu", "Dockerfile.cpu"),
                "worker-gpu": ("gpu", "Dockerfile.gpu")}
    redis = services.get("redis")
    if not isinstance(redis, dict):
        problems.append("service redis missing")
    else:
        command = " ".join(redis.get("command") or [])
        if not re.fullmatch(r"\$\{REDIS_IMAGE:-redis:[\w.-]+\}", str(redis.get("image", ""))):
            problems.append("service redis: image is not ${REDIS_IMAGE:-redis:<tag>} (the official one by default)")
        if "--appendonly yes" not in command:
            problems.append("service redis: appendonly is not on (accepted jobs would not survive a restart)")
        if not any(str(v).endswith(":/data") for v in redis.get("volumes") or []):
            problems.append("service redis: no volume for /data (its append-only file)")
        if redis.get("restart") != "always":
            problems.append("service redis: restart is not always")
    for name, (profile, dockerfile) in expected.items():
        service = services.get(name)
        if not isinstance(service, dict):
            problems.append(f"service {name} missing")
            continue

        def need(condition: bool, message: str) -> None:
            if not condition:
                problems.append(f"service {name}: {message}")

        need(service.get("profiles") == ([profile] if profile else None),
             f"profiles is {service.get('profiles')}, expected {[profile] if profile else None}")
        need(service.get("restart") == "always", "restart is not always")
        build = service.get("build") or {}
        need(build.get("dockerfile") == dockerfile and (repo / build.get("context", ".") / dockerfile).is_file(),
             f"build.dockerfile is not {dockerfile} (in the build context)")
        logging = service.get("logging") or {}
        options = logging.get("options") or {}
        need(logging.get("driver") == "json-file", "logging.driver is not json-file")
        need(bool(options.get("max-size")) and bool(options.get("max-file")), "logging options lack max-size/max-file")
        need(all(isinstance(v, str) for v in options.values()), "logging options must be strings")
        env_files = service.get("env_file") or []
        env_files = [env_files] if isinstance(env_files, str) else env_files
        for env_file in env_files:
            env_path = env_file["path"] if isinstance(env_file, dict) else env_file
            need((repo / env_path).is_file(), f"env_file {env_path} does not exist")
        environment = service.get("environment") or {}
        need(str(environment.get("REDIS_URL", "")).startswith("redis://redis:"), "REDIS_URL does not name redis")
        need(bool(service.get("stop_grace_period")), "no stop_grace_period (SIGTERM drains the jobs in flight)")
        need("redis" in (service.get("depends_on") or {}), "does not depend on redis")
        command = service.get("command") or []
        if name == "api":
            need(str(environment.get("SKIP_DECODER")) == "1", "SKIP_DECODER is not 1")
            need("9999:9999" in [str(p) for p in service.get("ports", [])], "port 9999 is not published")
            need(command[-1:] == ["serve"], "command is not `async-engine serve`")
        else:
            need(command[-1:] == ["worker"], "command is not `async-engine worker`")
            need(not service.get("ports"), "a worker publishes a port (it has no HTTP API; --scale would clash)")
            need(environment.get("ASYNC_ENGINE_MODELS_DIR") == "/var/lib/async-engine/models",
                 "environment does not set ASYNC_ENGINE_MODELS_DIR")
            need(bool(service.get("healthcheck")), "no healthcheck (the image's probes /health, which a worker lacks)")
        if profile == "gpu":
            need(environment.get("ASYNC_ENGINE_DEVICES") == "auto", "ASYNC_ENGINE_DEVICES is not auto")
            devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
            need(any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices),
                 "no GPU reservation (deploy.resources.reservations.devices, driver nvidia, capabilities [gpu])")
    return [f"docker-compose.yml: {p}" for p in problems]


def main() -> int:
    repo = Path(sys.argv[1]).resolve()
    patterns, problems = dockerignore(repo)
    ignored = ignored_by(patterns)
    for flavour in ("cpu", "gpu"):
        path = repo / f"Dockerfile.{flavour}"
        if not path.is_file():
            problems.append(f"{path.name} missing")
            continue
        problems += check_dockerfile(repo, path, flavour, ignored)
    problems += check_compose(repo)
    for problem in problems:
        print(f"lint-images: {problem}")
    if problems:
        return 1
    print("lint-images: Dockerfile.cpu, Dockerfile.gpu, docker-compose.yml and .dockerignore pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
