"""``combcn serve``: run the local inpainting server that the OpenFX plugin talks to.

The plugin starts it by itself when needed; run it by hand to pre-load the model, to choose the
default weights/device, or to check (``--ping``) or stop (``--stop``) a running one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from combcn.cli import DefaultsHelpFormatter, options
from combcn.errors import ConfigError

DEFAULT_IDLE = 600.0


def run(args: argparse.Namespace) -> int:
    from combcn.serve.client import ServeClient
    from combcn.serve.engine import ENGINE_ENV, resolve_factory
    from combcn.serve.paths import default_socket_path
    from combcn.serve.server import Server, ServerOptions

    socket_path = Path(args.socket) if args.socket else default_socket_path()
    if args.ping or args.stop:
        client = ServeClient(socket_path, timeout=10.0)
        reply = client.shutdown() if args.stop else client.ping()
        print(json.dumps(reply, indent=2))
        return 0 if reply.get("ok") else 1
    if args.idle_timeout < 0:
        raise ConfigError(f"--idle-timeout must be >= 0 seconds, got {args.idle_timeout}")
    if args.cache_mb < 0:
        raise ConfigError(f"--cache-mb must be >= 0, got {args.cache_mb}")
    if args.weights is not None and not Path(args.weights).is_file():
        raise ConfigError("weights file not found", path=args.weights)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    factory = resolve_factory(args.engine or os.environ.get(ENGINE_ENV))
    options = ServerOptions(
        socket_path=socket_path,
        idle_timeout=args.idle_timeout,
        cache_mb=args.cache_mb,
        weights=args.weights,
        device=None if args.device == "auto" else args.device,
        ready_fd=args.ready_fd,
    )
    server = Server(options, factory)
    if not server.bind():
        print(f"combcn serve: a server is already running on {socket_path}")
        return 0
    if args.preload:
        from combcn.serve.protocol import FillParams

        server._engine(FillParams(device=args.device))  # noqa: SLF001 - load the model before the first request
    return server.serve_forever()


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the local inpainting server that the OpenFX plugin talks to",
        description="Run the local combcn server used by the CombCN OpenFX plugin. It listens on a Unix "
        "socket only you can open, keeps the model loaded, caches inpainted windows, and exits after "
        "--idle-timeout seconds without requests. The plugin starts it by itself (see docs/OFX.md); "
        "run it by hand to pre-load a model or to check on a running server.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "-s",
        "--socket",
        metavar="PATH",
        default=None,
        help="Unix socket to listen on (default: $COMBCN_SERVE_SOCKET, else "
        "$XDG_RUNTIME_DIR/combcn/serve.sock, else /tmp/combcn-$UID/serve.sock)",
    )
    p.add_argument(
        "-i",
        "--idle-timeout",
        metavar="SECONDS",
        type=options.number(0.0, 365 * 86400.0),
        default=DEFAULT_IDLE,
        help="exit after this many seconds without requests (0 = never)",
    )
    p.add_argument(
        "-c",
        "--cache-mb",
        metavar="MB",
        type=options.integer(0, 1 << 20),
        default=1024,
        help="memory for cached inpainted windows, in MiB",
    )
    p.add_argument(
        "-w",
        "--weights",
        metavar="PATH",
        default=None,
        help="weights for requests that name none (default: the shipped weights)",
    )
    p.add_argument(
        "-d",
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="device for requests that say 'auto'",
    )
    p.add_argument(
        "-t",
        "--threads",
        metavar="N",
        type=options.threads_or_default,
        default=0,
        help="CPU threads for the network (0 = torch's default)",
    )
    p.add_argument("-p", "--preload", action="store_true", help="load the model before the first request")
    p.add_argument(
        "-e",
        "--engine",
        metavar="MODULE:FACTORY",
        default=None,
        help="another engine factory (advanced; also $COMBCN_SERVE_ENGINE)",
    )
    p.add_argument(
        "-r",
        "--ready-fd",
        metavar="FD",
        type=options.integer(0),
        default=None,
        help="write one byte to this descriptor once listening (used by the plugin)",
    )
    p.add_argument(
        "-P", "--ping", action="store_true", help="print the status of the running server and exit"
    )
    p.add_argument("-K", "--stop", action="store_true", help="ask the running server to exit")
    p.set_defaults(func=run)
