"""Run ``combcn inpaint`` from a host application's own Python (Nuke, Resolve).

Host adapters hold no inpainting logic: they build one ``combcn inpaint ... --progress json`` command,
run it as a subprocess, follow its JSON progress lines and can cancel it. This module is standard
library only (host Pythons have no torch or numpy) and works on Python >= 3.7 hosts as well.

The ``combcn`` program is found, in this order, through:

1. the environment variable ``COMBCN_EXECUTABLE``;
2. the path an installer recorded with :func:`set_installed_executable`;
3. ``combcn`` on ``PATH``.

Which frames a run reads (:func:`frames_read`) is asked of the engine's own Python, so a host can
pre-render exactly those frames without knowing the engine's temporal windows.

Progress protocol (one JSON object per stdout line, see ``combcn inpaint --help``)::

    {"event": "frame", "frame": 1001, "done": 3, "total": 10}
    {"event": "done", "written": 10, "skipped": 0}
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

log = logging.getLogger("combcn.host")

ENV_EXECUTABLE = "COMBCN_EXECUTABLE"
# Variables a host sets for its own embedded Python; inherited, they break the engine's interpreter.
HOST_PYTHON_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE")

_installed_executable: str | None = None


class HostError(Exception):
    """A failure to report to the artist as one readable message (no traceback)."""


class EngineNotFound(HostError):
    """The ``combcn`` program could not be found or is not executable."""


class EngineFailed(HostError):
    """``combcn inpaint`` exited non-zero (its own error message is in the text)."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class Cancelled(HostError):
    """The artist cancelled the render; the engine process was stopped."""


def set_installed_executable(path: str | None) -> None:
    """Record the ``combcn`` program an installer chose (used when ``COMBCN_EXECUTABLE`` is unset)."""
    global _installed_executable
    _installed_executable = path or None


def find_executable() -> str:
    """Return the path of the ``combcn`` program (env var, then installer's path, then ``PATH``).

    Raises:
        EngineNotFound: none of the three gives an executable file.
    """
    for origin, candidate in (
        (ENV_EXECUTABLE, os.environ.get(ENV_EXECUTABLE)),
        ("installer", _installed_executable),
    ):
        if not candidate:
            continue
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        raise EngineNotFound(
            f"the combcn program set by {origin} ({candidate}) is not an executable file; "
            f"point {ENV_EXECUTABLE} at <combcn checkout>/.venv/bin/combcn or re-run the installer"
        )
    found = shutil.which("combcn")
    if found:
        return found
    raise EngineNotFound(
        f"cannot find the combcn program: set {ENV_EXECUTABLE} to <combcn checkout>/.venv/bin/combcn, "
        "re-run the host installer, or put combcn on PATH"
    )


@dataclass(frozen=True)
class InpaintRequest:
    """One ``combcn inpaint`` run: what to read, what to write, which frames, and the matte options.

    Attributes:
        source: plate pattern (``plate.####.exr`` or ``plate.%04d.exr``).
        output: output pattern; frame numbers are kept.
        first, last: inclusive range of frames to write.
        matte: matte pattern, or None to use the plate's alpha.
        matte_channel: channel name in the matte (``A``, ``R``, ``matte.A``), None = engine default.
        invert, expand, feather: matte edits (``--invert``, ``--expand PX``, ``--feather PX``).
        shaper: ``acescct``, ``log``, ``srgb``, ``none``, or None for the engine's default.
        device: ``cpu``, ``cuda`` or None (engine picks).
        weights: weights file, or None for the shipped weights.
        track: let the clean plate follow the camera (the weights' setting; False = ``--no-track``,
            the locked-off plate).
        overwrite: replace output frames that already exist (a re-render).
        references: frames the artist cleaned, as (frame number, file) pairs in the plate's numbering
            (``--reference FRAME=FILE`` each): their pixels inside the hole are carried along the
            motion through the shot, ahead of synthesis.
    """

    source: str
    output: str
    first: int
    last: int
    matte: str | None = None
    matte_channel: str | None = None
    invert: bool = False
    expand: int = 0
    feather: float = 0.0
    shaper: str | None = None
    device: str | None = None
    weights: str | None = None
    track: bool = True
    overwrite: bool = False
    references: tuple[tuple[int, str], ...] = ()

    def command(self, executable: str) -> list[str]:
        """The argument vector of the run (``--progress json`` always)."""
        if self.last < self.first:
            raise HostError(f"the frame range {self.first}-{self.last} is empty; set first <= last")
        cmd = [executable, "inpaint", self.source, "-o", self.output, "--frames", f"{self.first}-{self.last}"]
        if self.matte:
            cmd += ["--matte", self.matte]
        if self.matte_channel:
            cmd += ["--matte-channel", self.matte_channel]
        if self.invert:
            cmd.append("--invert")
        if self.expand:
            cmd += ["--expand", str(int(self.expand))]
        if self.feather:
            cmd += ["--feather", repr(float(self.feather))]
        if self.shaper:
            cmd += ["--shaper", self.shaper]
        if self.device:
            cmd += ["--device", self.device]
        if self.weights:
            cmd += ["--weights", self.weights]
        if not self.track:
            cmd.append("--no-track")
        if self.overwrite:
            cmd.append("--overwrite")
        for frame, path in self.references:
            cmd += ["--reference", f"{int(frame)}={path}"]
        cmd += ["--progress", "json"]
        return cmd


@dataclass(frozen=True)
class Progress:
    """One written frame: ``frame`` number, ``done`` of ``total`` frames."""

    frame: int
    done: int
    total: int

    @property
    def percent(self) -> int:
        """0-100, for progress bars."""
        return int(100 * self.done / self.total) if self.total > 0 else 0


@dataclass
class Result:
    """What a finished run wrote: ``frames`` in the order the engine reported them."""

    written: int
    skipped: int
    frames: list[int] = field(default_factory=list)


def parse_event(line: str) -> dict[str, Any] | None:
    """Parse one stdout line; None for anything that is not a JSON object with an ``event`` key."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    return event


def engine_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The host's environment minus the variables of its embedded Python."""
    env = dict(os.environ if base is None else base)
    for name in HOST_PYTHON_VARIABLES:
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def own_process_group() -> dict[str, Any]:
    """Popen arguments that start a child in a process group of its own, so that stopping it
    (:func:`stop_process`) stops whatever it started too."""
    if os.name == "posix":
        return {"start_new_session": True}
    return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}


def stop_process(proc: subprocess.Popen[str], grace_s: float = 3.0) -> bool:
    """End a child started with :func:`own_process_group`: SIGTERM to its process group, SIGKILL after
    ``grace_s`` seconds; returns once it has exited (reaped). False when it had already ended."""
    if proc.poll() is not None:
        return False
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            if os.name == "posix":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except ProcessLookupError:
            pass
        proc.wait()
    except ProcessLookupError:  # it ended between poll and the signal
        proc.wait()
    return True


def _error_text(stderr_lines: list[str], returncode: int) -> str:
    # The CLI prints user mistakes as one "combcn inpaint: error: ..." line; show that, else the tail.
    errors = [line for line in stderr_lines if "error:" in line]
    if errors:
        return errors[-1].split("error:", 1)[1].strip()
    tail = "\n".join(stderr_lines[-5:]).strip()
    return f"combcn inpaint exited with status {returncode}" + (f":\n{tail}" if tail else "")


class EngineProcess:
    """A ``combcn inpaint`` subprocess whose progress is followed and which can be cancelled.

    Usage::

        proc = EngineProcess(request)
        proc.start()
        result = proc.wait(on_progress=print, should_cancel=lambda: False)
    """

    def __init__(self, request: InpaintRequest, executable: str | None = None) -> None:
        self.request = request
        self.command = request.command(executable or find_executable())
        self._proc: subprocess.Popen[str] | None = None
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=200)
        self._readers: list[threading.Thread] = []
        self._cancelled = threading.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the engine (raises EngineNotFound when the program cannot be started)."""
        log.info("running %s", " ".join(self.command))
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                env=engine_environment(),
                **own_process_group(),
            )
        except OSError as exc:
            raise EngineNotFound(f"cannot start {self.command[0]}: {exc.strerror or exc}") from exc
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            event = parse_event(line)
            if event is not None:
                self._events.put(event)
        self._events.put(None)  # end of stream

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            self._stderr.append(line.rstrip("\n"))
            log.debug("combcn: %s", line.rstrip())

    def cancel(self, grace_s: float = 3.0) -> None:
        """Stop the engine: SIGTERM to its process group, SIGKILL after ``grace_s`` seconds."""
        self._cancelled.set()
        proc = self._proc
        if proc is not None and stop_process(proc, grace_s):
            log.info("combcn inpaint cancelled (pid %d)", proc.pid)

    def wait(
        self,
        on_progress: Callable[[Progress], object] | None = None,
        should_cancel: Callable[[], object] | None = None,
        poll_s: float = 0.1,
    ) -> Result:
        """Follow the run to its end.

        Args:
            on_progress: called (in this thread) for every written frame.
            should_cancel: polled every ``poll_s`` seconds; truthy stops the engine.

        Raises:
            Cancelled: ``should_cancel`` asked for it or :meth:`cancel` was called.
            EngineFailed: non-zero exit (the engine's error message is the text), or no ``done`` event.
        """
        if self._proc is None:
            self.start()
        proc = self._proc
        assert proc is not None
        frames: list[int] = []
        done: dict[str, Any] | None = None
        while True:
            if self._cancelled.is_set() or (should_cancel is not None and should_cancel()):
                self.cancel()
                raise Cancelled(f"cancelled after {len(frames)} frame(s); frames already written are kept")
            try:
                event = self._events.get(timeout=poll_s)
            except queue.Empty:
                continue
            if event is None:
                break
            if event["event"] == "frame":
                progress = Progress(int(event["frame"]), int(event["done"]), int(event["total"]))
                frames.append(progress.frame)
                if on_progress is not None:
                    on_progress(progress)
            elif event["event"] == "done":
                done = event
        returncode = proc.wait()
        for reader in self._readers:
            reader.join(timeout=5.0)
        stderr = list(self._stderr)
        if self._cancelled.is_set():
            raise Cancelled(f"cancelled after {len(frames)} frame(s); frames already written are kept")
        if returncode != 0:
            raise EngineFailed(_error_text(stderr, returncode), returncode, "\n".join(stderr))
        if done is None:
            raise EngineFailed("combcn inpaint ended without reporting 'done'", returncode, "\n".join(stderr))
        return Result(int(done.get("written", len(frames))), int(done.get("skipped", 0)), frames)


# Runs in the engine's interpreter: the frames a render reads (combcn.engine.windows.frames_read), for the
# model window of the weights in use; with "settle", the frames read from a plate that holds exactly those.
# With references, the read run is widened to the nearest reference before and after it, with the frames
# between (the engine's rule, combcn.engine.core.reference_span: each window reads the nearest reference
# either side; over the contiguous run of windows that is the nearest either side of the run).
FRAMES_QUERY = """
import json, sys
from combcn.errors import CombcnError
try:
    from combcn.engine.windows import frames_read
    q = json.loads(sys.argv[1])
    window = q.get("window")
    if window is None:
        from combcn.model.config import ModelConfig
        from combcn.model.weights import DEFAULT_WEIGHTS, read_weights
        path = q.get("weights") or (DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None)
        config = read_weights(path)["config"] if path else {}
        window = ModelConfig.from_dict(config, where="weights config").window
    refs = sorted(q.get("references") or [])

    def widen(plate, read):
        if not read or not refs:
            return read
        lo = max([r for r in refs if r < read[0]] or [read[0]])
        hi = min([r for r in refs if r > read[-1]] or [read[-1]])
        return [f for f in plate if lo <= f <= hi]

    frames = q["frames"]
    read = widen(frames, frames_read(frames, q["targets"], window))
    while q.get("settle") and read != frames:
        frames, read = read, widen(read, frames_read(read, q["targets"], window))
except CombcnError as exc:
    print("combcn frames: error: %s" % exc, file=sys.stderr)
    sys.exit(2)
print(json.dumps(read))
"""


def engine_python(executable: str) -> list[str]:
    """The command that starts the Python the ``combcn`` program runs on (venv sibling, else its ``#!``).

    Raises:
        EngineNotFound: neither is there (a frozen or wrapped ``combcn``).
    """
    folder = os.path.dirname(os.path.abspath(executable))
    for name in ("python.exe", "python3", "python") if os.name == "nt" else ("python3", "python"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [candidate]
    try:
        with open(executable, "rb") as f:
            first = f.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        first = ""
    if first.startswith("#!") and first[2:].split():
        return first[2:].split()
    raise EngineNotFound(
        f"cannot find the Python that {executable} runs on (no python beside it, no #! line); "
        f"point {ENV_EXECUTABLE} at the combcn of a virtual environment"
    )


def frames_read(
    frames: list[int],
    targets: list[int],
    weights: str | None = None,
    settle: bool = False,
    executable: str | None = None,
    timeout_s: float = 300.0,
    should_cancel: Callable[[], object] | None = None,
    poll_s: float = 0.1,
    references: list[int] | None = None,
) -> list[int]:
    """The frames ``combcn inpaint`` reads from a plate holding ``frames`` to write ``targets``.

    Args:
        frames: frame numbers the plate has (or could have, for a plate still to be rendered).
        targets: frames to write (``--frames``).
        weights: the run's weights file (its model window decides), None = the shipped weights.
        settle: return the frames a plate holding exactly its answer is read for (the answer for a
            plate the host renders itself: the engine then reads every frame of it, and no other).
        executable: the ``combcn`` program (default: :func:`find_executable`).
        should_cancel: polled every ``poll_s`` seconds while the engine's Python runs; truthy ends
            that process (and anything it started) before :class:`Cancelled` is raised.
        references: frame numbers given a reference (``--reference``): the engine also reads from
            the nearest reference before and after the frames it reads, and every frame between.

    Raises:
        EngineNotFound / EngineFailed: the engine's Python could not be run, or refused (its message).
        Cancelled: ``should_cancel`` asked for it; the query's process has ended.
    """
    command = engine_python(executable or find_executable())
    query = {
        "frames": sorted(set(frames)),
        "targets": sorted(set(targets)),
        "weights": weights,
        "settle": settle,
        "references": sorted(set(int(f) for f in references or [])),
    }
    try:
        proc = subprocess.Popen(
            [*command, "-c", FRAMES_QUERY, json.dumps(query)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=engine_environment(),
            **own_process_group(),
        )
    except OSError as exc:
        raise EngineNotFound(f"cannot ask {command[0]} which frames a render reads: {exc}") from exc
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=poll_s)  # retried: no output is lost
                break
            except subprocess.TimeoutExpired:
                if should_cancel is not None and should_cancel():
                    raise Cancelled("cancelled while asking combcn which frames it reads") from None
                if time.monotonic() > deadline:
                    raise EngineNotFound(
                        f"{command[0]} did not say which frames a render reads within {timeout_s:g} s"
                    ) from None
    finally:
        if stop_process(proc, grace_s=1.0):  # cancelled or timed out: the query is not left running
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
    lines = stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise EngineFailed(_error_text(stderr.splitlines(), proc.returncode), proc.returncode, stderr)
    return [int(f) for f in json.loads(lines[-1])]


def run_inpaint(
    request: InpaintRequest,
    on_progress: Callable[[Progress], object] | None = None,
    should_cancel: Callable[[], object] | None = None,
    executable: str | None = None,
) -> Result:
    """Run ``combcn inpaint`` for ``request`` to completion (see :meth:`EngineProcess.wait`)."""
    proc = EngineProcess(request, executable)
    started = time.monotonic()
    proc.start()
    result = proc.wait(on_progress, should_cancel)
    log.info("combcn inpaint wrote %d frame(s) in %.1f s", result.written, time.monotonic() - started)
    return result
