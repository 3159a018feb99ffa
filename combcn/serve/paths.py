"""Where the server's socket and log live: a directory only this user can enter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from combcn.errors import ConfigError

SOCKET_ENV = "COMBCN_SERVE_SOCKET"


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/combcn`` if that variable names a directory, else ``/tmp/combcn-$UID``.

    Created with mode 0700 if missing. Raises ConfigError if it exists but another user owns it or
    others can enter it (someone could then read the frames or talk to the server).
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    base = Path(xdg) / "combcn" if xdg and Path(xdg).is_dir() else Path(f"/tmp/combcn-{os.getuid()}")
    ensure_private_dir(base)
    return base


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) or check that it is a directory of ours that nobody else can enter."""
    try:
        path.mkdir(mode=0o700, parents=False, exist_ok=True)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the server directory: {exc.strerror}", path=path) from exc
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ConfigError(
            f"not a private directory of this user (must be a directory with mode 0700 owned by uid "
            f"{os.getuid()}); remove it or choose another --socket",
            path=path,
        )


def default_socket_path() -> Path:
    """``$COMBCN_SERVE_SOCKET`` if set, else ``<runtime_dir>/serve.sock`` (the plugin uses the same rule)."""
    env = os.environ.get(SOCKET_ENV, "")
    if env:
        return Path(env)
    return runtime_dir() / "serve.sock"
