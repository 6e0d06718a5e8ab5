"""`sttm serve` (the HTTP server) and `sttm triton` (a Triton repository on nvidia-pytriton's server)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket

from cli.flags import PORT, Flags, at_least


def check_listen(host: str, port: int) -> None:
    """OSError in one line where `host:port` cannot be listened on (a name that does not resolve,
    a port in use): said before the model loads, where uvicorn says it after, exit 3."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as err:
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.settings import Settings, misspelt

    if problem := misspelt(os.environ):
        raise ValueError(problem)
    # Flags become STTM_* variables so that every worker process builds the same Settings.
    for name in ("model", "host", "port", "workers", "backend", "precision"):
        if getattr(args, name) is not None:
            os.environ[f"STTM_{name.upper()}"] = str(getattr(args, name))
    settings = Settings()
    if settings.require_model:  # what it can tell without opening the model: one line, exit 2
        from service.ladder_policy import check_served

        check_served(settings.model, settings.backend_options)
    check_listen(settings.host, settings.port)  # before the model loads (uvicorn binds after)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )


def _triton(args: argparse.Namespace) -> None:
    from tritonserve.launch import Ports, become, prepare

    ports = Ports(args.http_port, args.grpc_port, args.metrics_port)
    argv, env = prepare(args.repo, ports, args.host, args.tritonserver_arg)  # the repository and the wheel
    for port in dataclasses.astuple(ports):  # Triton finds a port in use after loading every model
        check_listen(args.host, port)
    become(argv, env)


def add_serve(sub, f: Flags) -> None:
    srv = sub.add_parser(
        "serve", parents=[f.runtime], help="serve a model over HTTP (settings also from STTM_* variables)"
    )
    srv.add_argument(
        "--model",
        default=None,
        help="exported .onnx or a ladder directory (default: the bundled demo model); --backend torch: "
        "also a .pt2, a checkpoint or a built-in model name",
    )
    srv.add_argument("--host", default=None)
    srv.add_argument("--port", type=PORT, default=None)
    srv.add_argument(
        "--workers",
        type=at_least(1),
        default=None,
        help="processes, each with its own copy of the model (default 1; URL streams need 1)",
    )
    srv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug", "trace"])
    srv.set_defaults(run=_serve)


def add_triton(sub, f: Flags) -> None:
    tri = sub.add_parser(
        "triton",
        help="serve a Triton repository (sttm export --format triton) with the Triton "
        "server of the nvidia-pytriton package, in the foreground",
    )
    tri.add_argument("repo", help="the model repository directory")
    tri.add_argument("--http-port", type=PORT, default=8100)
    tri.add_argument("--grpc-port", type=PORT, default=8101)
    tri.add_argument("--metrics-port", type=PORT, default=8102)
    tri.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    tri.add_argument(
        "--tritonserver-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="another tritonserver flag, repeatable, e.g. --tritonserver-arg=--log-verbose=1",
    )
    tri.set_defaults(run=_triton)
