"""``combcn serve``: the local inpainting server the OpenFX plugin talks to.

The plugin (``native/ofx``) starts it on demand and sends it windows of frames over a Unix-domain
socket only this user can open, with the pixels in shared memory (a memfd passed with the request).
The server keeps the model loaded, caches each inpainted window, and exits when idle.
Protocol and set-up: ``docs/OFX.md``.
"""

from __future__ import annotations

from combcn.serve.client import ServeClient
from combcn.serve.paths import default_socket_path, runtime_dir
from combcn.serve.protocol import PROTOCOL_VERSION, WindowLayout
from combcn.serve.server import Server, ServerOptions

__all__ = [
    "PROTOCOL_VERSION",
    "ServeClient",
    "Server",
    "ServerOptions",
    "WindowLayout",
    "default_socket_path",
    "runtime_dir",
]
