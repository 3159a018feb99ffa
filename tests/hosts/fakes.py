"""Test doubles for the host adapters: a fake ``combcn`` program, a minimal fake ``nuke`` module and a
minimal fake DaVinci Resolve object graph.

Nuke and Resolve cannot run here. The adapters are type-checked against the published stubs
(``types-nuke``, ``fusionscript-stubs``) by mypy in the tests; these fakes implement only the calls the
adapters make, with the semantics the hosts' documentation (or a published measurement) gives. Each
behaviour a test leans on names its source in a comment, so a reader can check the fake against the
host: "Nuke ref" is Foundry's Nuke Python API reference (nuke module, Read/Write node knobs),
"Resolve README" is Blackmagic's Developer/Scripting/README.txt that ships with Resolve.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugin"

# ---------------------------------------------------------------------------------------------------
# fake combcn program

FAKE_COMBCN = r"""
import json, os, re, subprocess, sys, time

args = sys.argv[1:]
log = os.environ.get("FAKE_COMBCN_LOG")
read = problem = None
child = None
if os.environ.get("FAKE_COMBCN_CHILD"):
    child = subprocess.Popen(["sleep", "60"])  # a grandchild: cancel must stop the whole group

def frame_path(pattern, frame):
    pattern = re.sub(r"#+", lambda m: "%0" + str(len(m.group(0))) + "d", pattern)
    return re.sub(r"%0(\d+)d", lambda m: str(frame).zfill(int(m.group(1))), pattern)

def on_disk(pattern):
    pattern = re.sub(r"#+", lambda m: "%0" + str(len(m.group(0))) + "d", pattern)
    folder, name = os.path.split(pattern)
    token = re.search(r"%0(\d+)d", name)
    regex = re.escape(name[: token.start()]) + r"(-?\d+)" + re.escape(name[token.end():]) + "$"
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(m.group(1)) for m in (re.match(regex, n) for n in names) if m)

def fail(text):
    print("combcn inpaint: error: " + text, file=sys.stderr, flush=True)
    sys.exit(2)

assert args[0] == "inpaint", args
output = args[args.index("-o") + 1]
first, last = (int(v) for v in args[args.index("--frames") + 1].split("-"))
if os.environ.get("FAKE_COMBCN_CHECK_FRAMES"):
    # The real engine's contract (combcn/engine/sequence.py): every target on disk, and the matte holds
    # every plate frame the temporal windows read (the engine's own plan, combcn.engine.windows).
    # windows.py loaded on its own (the engine package imports torch: slow) and the window of the
    # weights given once by the test (FAKE_COMBCN_CHECK_FRAMES holds it).
    import importlib.util
    spec = importlib.util.spec_from_file_location("fake_windows", os.environ["FAKE_COMBCN_WINDOWS_PY"])
    windows = sys.modules["fake_windows"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(windows)
    frames_read = windows.frames_read
    window = int(os.environ["FAKE_COMBCN_CHECK_FRAMES"])
    plate = on_disk(args[1])
    missing = [f for f in range(first, last + 1) if f not in plate]
    # The engine's reference checks (combcn/engine/sequence.py, _reference_files): FRAME=FILE, a frame
    # the plate has, a file that exists; and its reading rule (core.reference_span): the frames read
    # reach to the nearest reference before and after them, with every frame between.
    refs = {}
    for i, arg in enumerate(args):
        if arg == "--reference":
            number, _, path = args[i + 1].partition("=")
            if int(number) not in plate:
                problem = "the reference is for frame %s, which the plate does not have" % number
            elif not os.path.isfile(path):
                problem = "%s: the reference is missing" % path
            refs[int(number)] = path
    if missing:
        problem = "plate frame(s) missing: %s" % missing
    elif not problem:
        read = frames_read(plate, range(first, last + 1), window)
        lo = max([r for r in refs if r < read[0]] or [read[0]])
        hi = min([r for r in refs if r > read[-1]] or [read[-1]])
        read = [f for f in plate if lo <= f <= hi]
    if read:
        # The real engine's check (combcn/engine/sequence.py, _check_plate_frame): every plate frame read
        # has the first one's data and display windows. Frames a fake Nuke rendered say theirs.
        def window(frame):
            with open(frame_path(args[1], frame)) as f:
                found = re.search(r"dataWindow .*", f.read())
            return found.group(0) if found else None
        differs = [f for f in read if window(f) != window(read[0])]
        if differs:
            problem = "%s: differs from frame %d (size/windows %s vs %s); every plate frame must have " \
                "the same size and channels" % (frame_path(args[1], differs[0]), read[0],
                                                window(differs[0]), window(read[0]))
    if read and not problem and "--matte" in args:
        matte = set(on_disk(args[args.index("--matte") + 1]))
        lacking = [f for f in read if f not in matte]
        if lacking:
            problem = "matte frame(s) missing: %s; the matte needs every plate frame that is read" % lacking
if log:
    with open(log, "a") as f:
        entry = {"argv": args, "pid": os.getpid(), "child": child.pid if child else None, "read": read}
        given = [args[i + 1].partition("=") for i, a in enumerate(args) if a == "--reference"]
        entry["references"] = {n: open(p).read() for n, _, p in given if os.path.isfile(p)}  # what they held
        f.write(json.dumps(entry) + "\n")
print("combcn: INFO: fake engine starting", file=sys.stderr, flush=True)
if problem or os.environ.get("FAKE_COMBCN_FAIL"):
    fail(problem or os.environ["FAKE_COMBCN_FAIL"])
delay = float(os.environ.get("FAKE_COMBCN_DELAY", "0"))

print("not a json line", flush=True)
total = last - first + 1
for done, frame in enumerate(range(first, last + 1), start=1):
    if done > 1:
        time.sleep(delay)
    path = frame_path(output, frame)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:  # the output has the plate's format (display window), as the engine writes it
        with open(frame_path(args[1], frame)) as f:
            size = re.search(r"format \d+ \d+", f.read())
    except OSError:
        size = None
    with open(path, "w") as f:
        f.write("fake inpainted frame %d%s\n" % (frame, " " + size.group(0) if size else ""))
    print(json.dumps({"event": "frame", "frame": frame, "done": done, "total": total}), flush=True)
print(json.dumps({"event": "done", "written": total, "skipped": 0}), flush=True)
"""


def shipped_window() -> int:
    """The temporal window of the shipped weights (read once; torch is slow to import)."""
    global _WINDOW
    if _WINDOW is None:
        from combcn.model.config import ModelConfig
        from combcn.model.weights import DEFAULT_WEIGHTS, read_weights

        _WINDOW = ModelConfig.from_dict(read_weights(DEFAULT_WEIGHTS)["config"]).window
    return _WINDOW


_WINDOW: int | None = None


def check_frames_env() -> dict[str, str]:
    """Environment that makes the fake engine refuse missing plate/matte frames as the real one does."""
    return {
        "FAKE_COMBCN_CHECK_FRAMES": str(shipped_window()),
        "FAKE_COMBCN_WINDOWS_PY": str(REPO / "combcn" / "engine" / "windows.py"),
    }


def write_fake_combcn(folder: Path) -> Path:
    """Write an executable fake ``combcn`` that speaks the progress protocol and writes text frames.

    Environment: FAKE_COMBCN_LOG (file to append {"argv", "pid", "child", "read", "references"} to;
    "references": what each ``--reference FRAME=FILE`` file held when the engine started), FAKE_COMBCN_DELAY
    (seconds between frames), FAKE_COMBCN_FAIL (error message; exit 2), FAKE_COMBCN_CHILD (start a
    grandchild), FAKE_COMBCN_CHECK_FRAMES (the model window: refuse as the real engine does when a target
    frame or a matte frame the windows read is missing, or a reference's frame or file; "read" is then the
    frames the windows and references read; see
    :func:`check_frames_env`).
    """
    path = folder / "combcn"
    path.write_text(f"#!{sys.executable}\n" + FAKE_COMBCN)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_stalled_engine_python(folder: Path) -> Path:
    """A ``python3`` beside the fake ``combcn`` in ``folder`` (combcn_host.engine_python takes the one beside
    the program) that never answers the frames query: it starts a grandchild, writes
    ``<its pid> <grandchild pid>`` to ``folder/query.pids`` and sleeps, as an engine Python still importing
    torch does. Returns the pid file."""
    pids = folder / "query.pids"
    path = folder / "python3"
    path.write_text(f'#!/bin/sh\nsleep 60 &\necho "$$ $!" > "{pids}"\nexec sleep 60\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return pids


def query_pids(pids: Path, timeout: float = 10.0) -> tuple[int, int]:
    """The (query, grandchild) pids a stalled engine Python wrote, once it has written them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = pids.read_text().split() if pids.exists() else []
        if len(text) == 2:
            return int(text[0]), int(text[1])
        time.sleep(0.02)
    raise AssertionError(f"the stalled engine Python wrote no {pids}")


def fake_runs(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def gone_soon(pid: int, timeout: float = 3.0) -> bool:
    """True once ``pid`` has exited (signals are delivered asynchronously, so allow a moment)."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def frame_file(pattern: str, frame: int) -> str:
    pattern = re.sub(r"#+", lambda m: "%0" + str(len(m.group(0))) + "d", pattern)
    return re.sub(r"%0(\d+)d", lambda m: str(frame).zfill(int(m.group(1))), pattern)


# ---------------------------------------------------------------------------------------------------
# fake nuke


def make_fake_nuke(script_path: str = "") -> types.ModuleType:
    """A minimal ``nuke`` module: nodes, groups, knobs, menus, execute, ProgressTask, main-thread queue.

    Extra test handles on the module: ``messages`` (nuke.message texts), ``main_queue`` (calls made with
    executeInMainThread, run by ``run_main_thread()``), ``tasks`` (ProgressTasks), ``executed`` (execute
    calls), ``cancel_execute_at`` (a frame at which execute raises as a cancel does), ``menus``,
    ``plugin_paths``.
    """
    nuke = types.ModuleType("nuke")
    nuke.STARTLINE = 0x1000  # type: ignore[attr-defined]
    state: dict[str, Any] = {"this": []}

    class Knob:
        default: Any = None

        def __init__(self, name: str, label: str | None = None, value: Any = None) -> None:
            self._name = name
            self._label = label if label is not None else name
            self._value = self.default if value is None else value
            self.flags = 0
            self.tooltip = ""
            self.owner: Node | None = None

        def name(self) -> str:
            return self._name

        def label(self) -> str:
            return self._label

        def value(self) -> Any:
            return self._value

        def getValue(self) -> Any:
            return self._value

        def setValue(self, value: Any) -> bool:
            self._value = value
            return True

        def setTooltip(self, text: str) -> None:
            self.tooltip = text

        def setFlag(self, flag: int) -> None:
            self.flags |= flag

        def clearFlag(self, flag: int) -> None:
            self.flags &= ~flag

        def Class(self) -> str:
            return type(self).__name__

    class Int_Knob(Knob):
        default = 0

        def setValue(self, value: Any) -> bool:
            self._value = int(value)
            return True

    class Double_Knob(Knob):
        default = 0.0

    class Boolean_Knob(Knob):
        default = False

    class String_Knob(Knob):
        default = ""

    class EvalString_Knob(String_Knob):
        """Nuke ref, EvalString_Knob: value()/getText() is the text as typed; evaluate() "performs
        substitutions" (TCL). The fake expands the two forms a path uses for the environment,
        ``$env(NAME)`` and ``[getenv NAME]`` (Nuke user guide, "Using environment variables in file
        paths")."""

        def getText(self, oc: Any = None) -> str:
            return str(self._value or "")

        def expand(self) -> str:
            text = str(self._value or "")
            text = re.sub(r"\$env\((\w+)\)", lambda m: os.environ.get(m.group(1), ""), text)
            return re.sub(r"\[getenv (\w+)\]", lambda m: os.environ.get(m.group(1), ""), text)

        def evaluate(self, *args: Any) -> str:
            return self.expand()

    class File_Knob(EvalString_Knob):
        def evaluate(self, *args: Any) -> str:
            """A file knob's evaluate() also puts the current frame's number in place of ``####`` and
            ``%04d`` (Nuke ref, nuke.evaluateString: STRING_EXPAND_FILENUMBER "%nd and ### sequences are
            replaced by the frame number"; public Nuke tools note it, e.g. nk2dl's node_pretty_path:
            "node['file'].evaluate() ... replaces frame number placeholders ... with the actual frame
            number")."""
            return frame_file(self.expand(), nuke.frame())  # type: ignore[attr-defined]

        def fromUserText(self, text: str) -> None:
            """Nuke ref, File_Knob.fromUserText: "Assign string to knob, parses frame range off the end
            and opens file to get set the format" (setValue does neither). The fake's frame files are
            text: a ``format W H`` in the first frame's text is its format."""
            match = re.match(r"^(.*\S)\s+(-?\d+)-(-?\d+)$", text)
            path = match.group(1) if match else text
            self._value = path
            node = self.owner
            if node is None:
                return
            if match:
                first, last = int(match.group(2)), int(match.group(3))
                for name, value in (("first", first), ("origfirst", first)) + (
                    ("last", last),
                    ("origlast", last),
                ):
                    if node.knob(name) is not None:
                        node[name].setValue(value)
            else:
                first = int(node["first"].value()) if node.knob("first") is not None else 1
            try:
                with open(frame_file(self.expand(), first)) as f:
                    found = re.search(r"format (\d+) (\d+)", f.read())
            except OSError:
                found = None
            if found and node.knob("format") is not None:
                node["format"].setValue(f"{found.group(1)} {found.group(2)}")

    class Tab_Knob(Knob):
        pass

    class Text_Knob(Knob):
        def __init__(self, name: str, label: str | None = None, text: str = "") -> None:
            super().__init__(name, label, text)

    class Enumeration_Knob(Knob):
        def __init__(self, name: str, label: str, items: list[str]) -> None:
            super().__init__(name, label, items[0])
            self.items = list(items)

        def setValue(self, value: Any) -> bool:
            if value not in self.items:
                raise ValueError(f"{value!r} is not one of {self.items}")
            self._value = value
            return True

        def values(self) -> list[str]:
            return list(self.items)

    class Script_Knob(Knob):
        pass

    class PyScript_Knob(Script_Knob):
        def __init__(self, name: str, label: str | None = None, command: str = "") -> None:
            super().__init__(name, label, command)
            self.command = command

        def execute(self) -> None:
            """Run the button's script with nuke.thisNode() = the knob's node, as a click does."""
            state["this"].append(self.owner)
            try:
                exec(self.command, {"nuke": nuke})
            finally:
                state["this"].pop()

    class Reload_Knob(Script_Knob):
        """The Read's "reload" button (Nuke ref, Read node): re-reads the files (``nuke.reloads``)."""

        def execute(self) -> None:
            assert self.owner is not None
            nuke.reloads.append((self.owner.name(), self.owner["file"].value()))  # type: ignore[attr-defined]

    class Colorspace_Knob(Knob):
        """A Read's ``colorspace``. Nuke ref (Read node, colorspace): the first item is the default for the
        file type, shown as ``default (<name>)`` where <name> comes from the root's default LUT knobs
        (floatLut for EXR, logLut for DPX: Project Settings > Color); another file type's default, or a
        name the colour config lacks, is refused (Enumeration_Knob.setValue raises ValueError)."""

        default = "default"

        def resolved(self) -> str:
            path = str(self.owner["file"].value()) if self.owner is not None else ""
            lut = "logLut" if path.lower().endswith(".dpx") else "floatLut"
            return str(root_node[lut].value())

        def value(self) -> Any:
            return f"default ({self.resolved()})" if self._value == "default" else self._value

        def setValue(self, value: Any) -> bool:
            if value in ("default", f"default ({self.resolved()})"):
                self._value = "default"
            elif value in nuke.colorspaces:  # type: ignore[attr-defined]
                self._value = value
            else:
                raise ValueError(f"Invalid value {value!r} for colorspace")
            return True

    default_knobs: dict[str, list[Knob]] = {}

    def knobs_for(cls: str) -> list[Knob]:
        knobs = [] if cls in ("Dot", "Input", "Output", "Root") else [Boolean_Knob("disable")]
        return knobs + class_knobs(cls)

    def class_knobs(cls: str) -> list[Knob]:
        if cls == "Crop":
            # Nuke ref guide, Crop: box (x, y, r, t); reformat (off: keep the input's format; on: the
            # box becomes the format); intersect (off: the output bbox is the box, even beyond the
            # input's); crop = "black outside" (on by default).
            return [
                Knob("box", value=[0, 0, 0, 0]),
                Boolean_Knob("reformat"),
                Boolean_Knob("intersect"),
                Boolean_Knob("crop", value=True),
            ]
        if cls == "Read":
            return [
                String_Knob("format", value=""),  # "W H"; empty: the project's format
                File_Knob("file"),
                File_Knob("proxy"),
                Int_Knob("first", value=1),
                Int_Knob("last", value=1),
                Int_Knob("origfirst", value=1),
                Int_Knob("origlast", value=1),
                # Nuke ref, Read node: "frame" is an expression, a start frame or an offset by frame_mode.
                Enumeration_Knob("frame_mode", "frame mode", ["expression", "start at", "offset"]),
                String_Knob("frame"),
                Colorspace_Knob("colorspace"),
                Boolean_Knob("raw"),
                Reload_Knob("reload"),
            ]
        if cls == "Write":
            return [
                File_Knob("file"),
                String_Knob("file_type"),
                String_Knob("channels", value="rgb"),
                String_Knob("datatype", value="16 bit half"),
                Boolean_Knob("raw"),
                Colorspace_Knob("colorspace"),  # Nuke ref, Write node: the colour space written to (raw off)
            ]
        if cls == "Switch":
            return [Int_Knob("which")]
        return list(default_knobs.get(cls, []))

    class Node:
        def __init__(self, cls: str, name: str | None = None, parent: Group | None = None) -> None:
            self._class = cls
            self._knobs: dict[str, Knob] = {}
            self._inputs: dict[int, Node | None] = {}
            self._xy = (0, 0)
            self._parent = parent
            for knob in knobs_for(cls):
                self.addKnob(knob)
            self._name = ""
            self.setName(name or cls)
            if parent is not None:
                parent._children.append(self)

        def Class(self) -> str:
            return self._class

        def name(self) -> str:
            return self._name

        def setName(self, name: str, uncollide: bool = True, updateExpressions: bool = False) -> None:
            siblings = {n.name() for n in self._parent._children if n is not self} if self._parent else set()
            candidate, i = name, 1
            while candidate in siblings:
                candidate, i = f"{name}{i}", i + 1
            self._name = candidate

        def fullName(self) -> str:
            parent = self._parent
            if parent is None or parent is root_node:
                return self._name
            return f"{parent.fullName()}.{self._name}"

        def addKnob(self, knob: Knob) -> None:
            knob.owner = self
            self._knobs[knob.name()] = knob

        def knob(self, name: str) -> Knob | None:
            return self._knobs.get(name)

        def knobs(self) -> dict[str, Knob]:
            return dict(self._knobs)

        def __getitem__(self, name: str) -> Knob:
            if name not in self._knobs:
                raise NameError(f"knob {name} does not exist")
            return self._knobs[name]

        def input(self, i: int) -> Node | None:
            return self._inputs.get(i)

        def setInput(self, i: int, node: Node | None) -> bool:
            self._inputs[i] = node
            return True

        def firstFrame(self) -> int:
            return int(self["first"].value()) if "first" in self._knobs else root_node.firstFrame()

        def lastFrame(self) -> int:
            return int(self["last"].value()) if "last" in self._knobs else root_node.lastFrame()

        def xpos(self) -> int:
            return self._xy[0]

        def ypos(self) -> int:
            return self._xy[1]

        def setXYpos(self, x: int, y: int) -> None:
            self._xy = (x, y)

        def parent(self) -> Group | None:
            return self._parent

        def upstream(self) -> Node | None:
            """What feeds this node's image: its input 0; for a Group's Input node, the Group's input of
            that number (Input nodes are numbered in creation order, as Nuke numbers them)."""
            parent = self._parent
            if self._class == "Input" and parent is not None:
                inputs = [n for n in parent._children if n.Class() == "Input"]
                return parent.input(inputs.index(self))
            return self.input(0)

        def format(self) -> Format:
            """Nuke ref, Node.format: the format of the node's output (a Read's from its file, a Crop's
            box when it reformats, else the input's; with no input, the project's)."""
            if self._class == "Crop" and self["reformat"].value():
                x, y, r, t = self["box"].value()
                return Format(r - x, t - y)
            if self.knob("format") is not None and str(self["format"].value()).strip():
                width, height = (int(v) for v in str(self["format"].value()).split())
                return Format(width, height)
            above = self.upstream()
            return above.format() if above is not None else root_node.format()

        def data_window(self, frame: int) -> tuple[int, int, int, int]:
            """The bounding box at ``frame`` (x, y, r, t). A test sets ``bbox_at`` (frame -> box) on a
            node whose bbox moves; a Crop gives its box (intersect off) or the box within its input's
            (on); disabled nodes, Dots and nodes without a bbox of their own pass their input's on."""
            if self._class == "Crop":
                x, y, r, t = self["box"].value()
                if not self["intersect"].value() and self.upstream() is not None:
                    return (x, y, r, t)
                above = self.upstream()
                ax, ay, ar, at = above.data_window(frame) if above is not None else (x, y, r, t)
                return (max(x, ax), max(y, ay), min(r, ar), min(t, at))
            moving = getattr(self, "bbox_at", None)
            if moving is not None and not (self.knob("disable") and self["disable"].value()):
                return tuple(moving(frame))  # type: ignore[return-value]
            above = self.upstream()
            if above is not None and self._class != "Read":
                return above.data_window(frame)
            size = self.format()
            return (0, 0, size.width(), size.height())

    class Format:
        """Nuke ref, nuke.Format: width(), height() of a format whose image starts at 0, 0."""

        def __init__(self, width: int, height: int) -> None:
            self._size = (width, height)

        def width(self) -> int:
            return self._size[0]

        def height(self) -> int:
            return self._size[1]

    class Group(Node):
        def __init__(self, cls: str = "Group", name: str | None = None, parent: Group | None = None) -> None:
            self._children: list[Node] = []
            super().__init__(cls, name, parent)

        def begin(self) -> Group:
            state.setdefault("stack", []).append(self)
            return self

        def end(self) -> None:
            state["stack"].pop()

        def __enter__(self) -> Group:
            return self.begin()

        def __exit__(self, *exc: object) -> None:
            self.end()

        def nodes(self) -> list[Node]:
            return list(self._children)

        def node(self, name: str) -> Node | None:
            return next((n for n in self._children if n.name() == name), None)

    class Root(Group):
        def __init__(self) -> None:
            super().__init__("Root", "Root")
            self.first_frame, self.last_frame = 1001, 1010
            self.script = script_path
            # Project Settings: proxy mode, and the default colour space per file type (Nuke ref, Root).
            for knob in (Boolean_Knob("proxy"), String_Knob("floatLut", value="linear")):
                self.addKnob(knob)
            self.addKnob(String_Knob("logLut", value="Cineon"))
            # Project Settings: the format new nodes get, and the folder relative file paths are taken
            # from (Nuke user guide, Project Settings > Root > project directory).
            self.addKnob(String_Knob("format", value="1920 1080"))
            self.addKnob(File_Knob("project_directory"))

        def name(self) -> str:
            return self.script or "Root"

        def format(self) -> Format:
            width, height = (int(v) for v in str(self["format"].value()).split())
            return Format(width, height)

        def firstFrame(self) -> int:
            return self.first_frame

        def lastFrame(self) -> int:
            return self.last_frame

    root_node = Root()

    def current_group() -> Group:
        stack = state.get("stack") or []
        return stack[-1] if stack else root_node

    def create(cls: str, name: str | None = None, **knobs: Any) -> Node:
        node: Node = Group(cls, name, current_group()) if cls == "Group" else Node(cls, name, current_group())
        for key, value in knobs.items():
            node[key].setValue(value)
        return node

    class Nodes:
        def __getattr__(self, cls: str) -> Callable[..., Node]:
            return lambda **knobs: create(cls, **knobs)

    class Menu:
        def __init__(self, name: str) -> None:
            self._name = name
            self.items: dict[str, Any] = {}

        def name(self) -> str:
            return self._name

        def addMenu(self, name: str) -> Menu:
            sub = self.items.get(name)
            if not isinstance(sub, Menu):
                sub = self.items[name] = Menu(name)
            return sub

        def addCommand(self, label: str, command: Any = None) -> None:
            self.items[label] = command

    class ProgressTask:
        def __init__(self, name: str) -> None:
            self.name = name
            self.progress: list[int] = []
            self.messages: list[str] = []
            self.cancelled = False
            nuke.tasks.append(self)  # type: ignore[attr-defined]

        def setProgress(self, value: int) -> None:
            self.progress.append(value)

        def setMessage(self, text: str) -> None:
            self.messages.append(text)

        def isCancelled(self) -> bool:
            return self.cancelled

    menus: dict[str, Menu] = {}

    def menu(name: str) -> Menu:
        return menus.setdefault(name, Menu(name))

    def createNode(cls: str, knobs: str = "", inpanel: bool = True) -> Node:
        node = create(cls)
        if isinstance(node, Group):  # as the toolbar's Other > Group: Input1 -> Output1 inside
            with node:
                create("Output", "Output1").setInput(0, create("Input", "Input1"))
        return node

    def toNode(name: str) -> Node | None:
        group: Node | None = root_node
        for part in name.split("."):
            group = group.node(part) if isinstance(group, Group) else None
        return group

    def filename(node: Node, i: int = 0) -> str | None:
        """Nuke ref, nuke.filename: the node's file, the PROXY file when proxy mode is on and one is set."""
        # "All expansion of commands and variables is done. However by default it will still have %04d
        # sequences in it" (Nuke ref, nuke.filename).
        value = node["file"].expand()
        proxy = node.knob("proxy")
        if root_node["proxy"].value() and proxy is not None and proxy.value():
            value = proxy.expand()
        return re.sub(r"#+", lambda m: "%0" + str(len(m.group(0))) + "d", value) if value else None

    def execute(node: Node, start: int, end: int, incr: int = 1, views: list[str] | None = None) -> None:
        """Render a Write: one small text file per frame, naming what fed the Write (and, as Nuke ref's
        proxy mode does, the proxy scale when proxy mode is on), its channels, and the frame's bounding
        box as ``dataWindow x y r t``: Nuke's EXR writer stores the bbox as the data window (Nuke user
        guide, Write > exr: only "autocrop", off by default, would shrink it further)."""
        nuke.executed.append((node.name(), start, end))  # type: ignore[attr-defined]
        nuke.executed_views.append(views)  # type: ignore[attr-defined]
        upstream = node.input(0)
        scale = "proxy" if root_node["proxy"].value() else "full"
        for frame in range(start, end + 1, incr):
            if frame == nuke.cancel_execute_at:  # type: ignore[attr-defined]
                raise RuntimeError("Cancelled")  # what nuke.execute raises when the artist cancels
            path = frame_file(node["file"].value(), frame)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                source = upstream.name() if upstream else None
                f.write(f"{source} frame {frame} channels {node['channels'].value()} {scale}\n")
                if upstream is not None:
                    size = upstream.format()
                    window = " ".join(str(v) for v in upstream.data_window(frame))
                    f.write(f"dataWindow {window} format {size.width()} {size.height()}\n")
                # Nuke ref, Write node: raw writes the working-space values; else converted to colorspace.
                f.write(f"raw {node['raw'].value()} colorspace {node['colorspace'].value()}\n")

    def views() -> list[str]:
        """Nuke ref, nuke.views: the script's views (Project Settings > Views); ["main"] by default."""
        return list(nuke.view_list)  # type: ignore[attr-defined]

    def delete(node: Node | None) -> None:
        if node is not None and node.parent() is not None:
            node.parent()._children.remove(node)

    def message(text: str) -> None:
        nuke.messages.append(text)  # type: ignore[attr-defined]

    def executeInMainThread(
        call: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> None:
        nuke.main_queue.append((call, args, kwargs or {}))  # type: ignore[attr-defined]

    def run_main_thread() -> None:
        queue = nuke.main_queue  # type: ignore[attr-defined]
        while queue:
            call, args, kwargs = queue.pop(0)
            call(*args, **kwargs)

    def thisNode() -> Node:
        return state["this"][-1]

    def frame(f: int | None = None) -> int:
        """Nuke ref, nuke.frame: the current frame (the timeline's; the fake starts at the root's first)."""
        if f is not None:
            state["frame"] = int(f)
        return int(state.get("frame", root_node.firstFrame()))

    def pluginAddPath(path: str, addToSysPath: bool = True) -> None:
        """As Nuke: prepend to the plugin path and sys.path, then run that folder's init.py."""
        nuke.plugin_paths.insert(0, path)  # type: ignore[attr-defined]
        if addToSysPath:
            sys.path.insert(0, path)
        init = os.path.join(path, "init.py")
        if os.path.isfile(init):
            with open(init) as f:
                exec(compile(f.read(), init, "exec"), {"__name__": "__main__", "nuke": nuke})

    for name, value in list(locals().items()):
        if name in (
            "nuke",
            "state",
            "default_knobs",
            "knobs_for",
            "current_group",
            "create",
            "root_node",
            "menus",
        ):
            continue
        if isinstance(value, type) or callable(value):
            setattr(nuke, name, value)
    nuke.nodes = Nodes()  # type: ignore[attr-defined]
    nuke.root = lambda: root_node  # type: ignore[attr-defined]
    nuke.messages = []  # type: ignore[attr-defined]
    nuke.main_queue = []  # type: ignore[attr-defined]
    nuke.tasks = []  # type: ignore[attr-defined]
    nuke.executed = []  # type: ignore[attr-defined]
    nuke.executed_views = []  # type: ignore[attr-defined]
    nuke.reloads = []  # type: ignore[attr-defined]
    nuke.view_list = ["main"]  # type: ignore[attr-defined]
    nuke.colorspaces = ["linear", "sRGB", "rec709", "Cineon", "ACES - ACEScg", "ACES - ACES2065-1"]  # type: ignore[attr-defined]
    nuke.cancel_execute_at = None  # type: ignore[attr-defined]
    nuke.menus = menus  # type: ignore[attr-defined]
    nuke.plugin_paths = []  # type: ignore[attr-defined]
    return nuke


# ---------------------------------------------------------------------------------------------------
# fake DaVinci Resolve


class FakeMediaPoolItem:
    """A media-pool clip. Resolve README, GetClipProperty: string values; for an image sequence
    ``File Path`` is ``plate.[1001-1100].exr``, and ``Start``/``End`` are its first/last frame numbers
    (the clip's own numbering, which AppendToTimeline's startFrame/endFrame count in: pipelines that
    place sequences, e.g. davinci-resolve-mcp's measured append, use ``Start`` + offset)."""

    _ids = 0

    def __init__(self, name: str, path: str | None, fps: str = "24") -> None:
        FakeMediaPoolItem._ids += 1
        self.uid = f"mpi{FakeMediaPoolItem._ids}"
        self.name = name
        self.path = path
        self.fps = fps
        # Clip attributes a test sets (colour: "Input Color Space", "IDT"), and those Resolve refuses to
        # set (Resolve README, "Project and Clip properties": some are read-only in some projects, e.g.
        # custom colour spaces in an ACES workflow; SetClipProperty then returns False). Public scripts
        # read and set "Input Color Space" by these names (e.g. "Project" for the project's default) and
        # find SetClipProperty returning False for a name the project does not offer.
        self.props: dict[str, str] = {}
        self.read_only: set[str] = set()

    def GetName(self) -> str:
        return self.name

    def GetUniqueId(self) -> str:
        return self.uid

    def frames(self) -> tuple[int, int] | None:
        match = re.search(r"\[(\d+)-(\d+)\]", self.path or "")
        return (int(match.group(1)), int(match.group(2))) if match else None

    def GetClipProperty(self, key: str | None = None) -> Any:
        span = self.frames() or (0, 0)
        props = {
            "File Path": self.path or "",
            "Clip Name": self.name,
            "File Name": os.path.basename(self.path or ""),
            "Start": str(span[0]),
            "End": str(span[1]),
            "Frames": str(span[1] - span[0] + 1),
            "FPS": self.fps,
            "Input Color Space": "",
            "IDT": "",
        }
        props.update(self.props)
        return props if key is None else props.get(key, "")

    def SetClipProperty(self, key: str, value: str) -> bool:
        if key in self.read_only or key not in self.GetClipProperty():
            return False
        self.props[key] = value
        return True


class FakeFolder:
    def __init__(self, name: str, clips: list[FakeMediaPoolItem] | None = None) -> None:
        self.name = name
        self.clips = list(clips or [])
        self.subfolders: list[FakeFolder] = []

    def GetName(self) -> str:
        return self.name

    def GetClipList(self) -> list[FakeMediaPoolItem]:
        return list(self.clips)

    def GetSubFolderList(self) -> list[FakeFolder]:
        return list(self.subfolders)


class FakeTimelineItem:
    """A clip on a track: record frames [start, start + duration), absolute (86400 = 01:00:00:00 at 24).

    ``source`` is where it starts in its clip, counted from the head of the file: GetSourceStartFrame
    is file-relative and GetSourceEndFrame exclusive when clip and timeline rates match, and their span
    is source frames, so a retimed item (``speed`` != 1) spans duration x speed, while GetLeftOffset
    counts record-side (position / speed). Measured on Resolve Studio 19.1-21.1 by davinci-resolve-mcp
    (docs/reference/api-limitations.md, "GetSourceStartFrame" and the retime witness calibration). Other
    builds report GetSourceStartFrame in the clip's own numbering instead (a gyroflow-plugins report on
    subclips: "GetClipProperty('Start') + GetLeftOffset() == GetSourceStartFrame()"; davinci-resolve-mcp
    found it timecode-absolute on media with a non-zero start timecode): the adapter uses only their
    span, and Start + GetLeftOffset for the numbers, which both readings agree on.
    """

    def __init__(
        self,
        clip: FakeMediaPoolItem,
        track: int,
        start: int,
        duration: int,
        left_offset: int = 0,
        speed: float = 1.0,
    ) -> None:
        self.clip, self.track, self.start, self.duration = clip, track, start, duration
        self.source, self.speed = left_offset, speed

    def GetName(self) -> str:
        return self.clip.GetName()

    def GetMediaPoolItem(self) -> FakeMediaPoolItem:
        return self.clip

    def GetTrackTypeAndIndex(self) -> tuple[str, int]:
        return ("video", self.track)

    def GetStart(self, subframe_precision: bool = False) -> int:
        return self.start

    def GetEnd(self, subframe_precision: bool = False) -> int:
        return self.start + self.duration

    def GetDuration(self, subframe_precision: bool = False) -> int:
        return self.duration

    def GetLeftOffset(self, subframe_precision: bool = False) -> int:
        return int(self.source / self.speed)

    def GetSourceStartFrame(self) -> int:
        return self.source

    def GetSourceEndFrame(self) -> int:
        return self.source + int(round(self.duration * self.speed))


def _frames_to_timecode(frames: int, fps: int) -> str:
    seconds, frame = divmod(frames, fps)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{hour:02d}:{minute:02d}:{second:02d}:{frame:02d}"


class FakeTimeline:
    """Tracks of items, a playhead and a 24 fps rate (non-drop timecode) starting at 01:00:00:00.

    GetCurrentVideoItem answers with the item on the HIGHEST video track under the playhead, as users
    report it (so the matte above a plate, or an earlier result, comes back before the plate).
    """

    def __init__(self, tracks: int, fps: int = 24) -> None:
        self.tracks: dict[int, list[FakeTimelineItem]] = {i: [] for i in range(1, tracks + 1)}
        self.fps = fps
        self.start_frame = 3600 * fps
        self.playhead = self.start_frame

    def add(self, item: FakeTimelineItem) -> FakeTimelineItem:
        self.tracks[item.track].append(item)
        return item

    def GetCurrentVideoItem(self) -> FakeTimelineItem | None:
        for track in sorted(self.tracks, reverse=True):
            for item in self.tracks[track]:
                if item.start <= self.playhead < item.start + item.duration:
                    return item
        return None

    def GetSetting(self, name: str) -> str:
        assert name == "timelineFrameRate"
        return str(self.fps)

    def GetStartFrame(self) -> int:
        return self.start_frame

    def GetStartTimecode(self) -> str:
        return _frames_to_timecode(self.start_frame, self.fps)

    def GetCurrentTimecode(self) -> str:
        return _frames_to_timecode(self.playhead, self.fps)

    def GetTrackCount(self, track_type: str) -> int:
        assert track_type == "video"
        return len(self.tracks)

    def GetItemListInTrack(self, track_type: str, index: int) -> list[FakeTimelineItem]:
        assert track_type == "video"
        return list(self.tracks[index])

    def DeleteClips(self, items: list[FakeTimelineItem], ripple: bool = False) -> bool:
        """Resolve README, Timeline.DeleteClips([timelineItems], Bool): removes the items."""
        for item in items:
            self.tracks[item.track].remove(item)
        return True

    def AddTrack(self, track_type: str, sub_track_type: Any = None) -> bool:
        assert track_type == "video" and sub_track_type is None
        self.tracks[len(self.tracks) + 1] = []
        return True


class FakeMediaPool:
    def __init__(self, root: FakeFolder, timeline: FakeTimeline) -> None:
        self.root = root
        self.current = root
        self.timeline = timeline
        self.imports: list[tuple[str, list[Any]]] = []
        self.appends: list[dict[str, Any]] = []
        # Test handles for what other Resolve builds are reported to do: "inclusive" counts endFrame
        # as the last frame shown (AYON's loader passes the clip's End, its last frame, as endFrame);
        # "hollow" answers with an item whose getters all return None (AYON's loader, create_timeline_
        # item: "Adding the item may fail whilst Resolve will still return a TimelineItem").
        self.append_mode = "exclusive"

    def GetRootFolder(self) -> FakeFolder:
        return self.root

    def GetCurrentFolder(self) -> FakeFolder:
        return self.current

    def SetCurrentFolder(self, folder: FakeFolder) -> bool:
        self.current = folder
        return True

    def ImportMedia(self, items: list[Any]) -> list[FakeMediaPoolItem]:
        """Like Resolve: one clip per clip-info, named ``stem.[first-last].ext``; [] if frames are missing."""
        self.imports.append((self.current.GetName(), items))
        made = []
        for info in items:
            pattern, first, last = info["FilePath"], info["StartIndex"], info["EndIndex"]
            if not all(os.path.isfile(frame_file(pattern, f)) for f in range(first, last + 1)):
                return []
            token = re.search(r"%0(\d+)d", pattern)
            assert token is not None
            width = int(token.group(1))
            path = pattern[: token.start()] + f"[{first:0{width}d}-{last:0{width}d}]" + pattern[token.end() :]
            clip = FakeMediaPoolItem(os.path.basename(path), path)
            self.current.clips.append(clip)
            made.append(clip)
        return made

    def AppendToTimeline(self, infos: list[dict[str, Any]]) -> list[FakeTimelineItem]:
        """The README's clip-info form. startFrame/endFrame are the clip's own frame numbers (its Start
        property), endFrame EXCLUSIVE (duration = endFrame - startFrame: measured on Resolve 21 by
        video-editor-skills' resolve-scripting notes and davinci-resolve-mcp); recordFrame is an
        absolute record frame. Frames outside the clip are refused (Resolve adds nothing)."""
        self.appends.extend(infos)
        placed = []
        for info in infos:
            clip = info["mediaPoolItem"]
            span = clip.frames()
            start, end = info["startFrame"], info["endFrame"]
            if span is None or start < span[0] or end > span[1] + 1 or end <= start:
                return []
            if self.append_mode == "hollow":
                placed.append(_HollowItem())
                continue
            duration = end - start + (1 if self.append_mode == "inclusive" else 0)
            item = FakeTimelineItem(clip, info["trackIndex"], info["recordFrame"], duration, start - span[0])
            placed.append(self.timeline.add(item))
        return placed


class _HollowItem:
    """A TimelineItem whose getters return None (see FakeMediaPool.append_mode)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class FakeResolve:
    """resolve -> GetProjectManager() -> GetCurrentProject() -> GetCurrentTimeline()/GetMediaPool()."""

    def __init__(self, media_pool: FakeMediaPool, timeline: FakeTimeline) -> None:
        project = types.SimpleNamespace(GetCurrentTimeline=lambda: timeline, GetMediaPool=lambda: media_pool)
        manager = types.SimpleNamespace(GetCurrentProject=lambda: project)
        self.GetProjectManager = lambda: manager


# ---------------------------------------------------------------------------------------------------
# fake Fusion UIManager (Resolve scripts' windows)


class FakeUI:
    """Fusion's UIManager as Resolve's scripts use it (the UI Manager examples Blackmagic ships under
    Fusion/Scripts, and the We Suck Less "UI Manager" guide): ``ui.VGroup/HGroup/Label/Button/HGap``
    build elements from a dict of properties, ``bmd.UIDispatcher(ui).AddWindow(props, layout)`` makes a
    window whose ``Find(ID)`` element has a settable ``Text``, ``win.On.<ID>.Clicked``/``Close`` and
    ``disp.On.Timeout`` (for ``ui.Timer``) take handlers, ``disp.RunLoop()`` delivers events until
    ``disp.ExitLoop()``.

    Test handles: ``texts`` (every Text a Status label showed), ``press`` (a callable given each shown
    text; returning a button ID clicks it), ``windows`` (IDs of windows shown).
    """

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.windows: list[str] = []
        self.press: Callable[[str], str | None] = lambda text: None

    def _element(self, props: dict[str, Any] | None = None, children: Any = None) -> types.SimpleNamespace:
        return types.SimpleNamespace(props=dict(props or {}), children=children)

    def VGroup(self, children: list[Any]) -> types.SimpleNamespace:
        return self._element(None, children)

    def HGroup(self, children: list[Any]) -> types.SimpleNamespace:
        return self._element(None, children)

    def HGap(self, *args: Any) -> types.SimpleNamespace:
        return self._element()

    def Label(self, props: dict[str, Any]) -> types.SimpleNamespace:
        return self._element(props)

    def Button(self, props: dict[str, Any]) -> types.SimpleNamespace:
        return self._element(props)

    def Timer(self, props: dict[str, Any]) -> types.SimpleNamespace:
        state = {"running": False}
        self.timer = state
        return types.SimpleNamespace(
            Start=lambda: state.update(running=True), Stop=lambda: state.update(running=False)
        )

    def dispatcher(self) -> FakeDispatcher:
        return FakeDispatcher(self)


class _Handlers:
    """``win.On.<ID>.Clicked = f`` / ``disp.On.Timeout = f``: names not set yet read as a nested slot."""

    def __getattr__(self, name: str) -> Any:
        slot = _Handlers()
        object.__setattr__(self, name, slot)
        return slot


class _Label:
    def __init__(self, ui: FakeUI, text: str) -> None:
        self.__dict__["ui"] = ui
        self.__dict__["Text"] = text
        ui.texts.append(text)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value
        if name == "Text":
            self.ui.texts.append(value)


class FakeWindow:
    def __init__(self, ui: FakeUI, props: dict[str, Any], layout: Any) -> None:
        self.ui, self.id = ui, props["ID"]
        self.On = _Handlers()
        self.labels: dict[str, _Label] = {}
        self.buttons: list[str] = []
        stack = [layout]
        while stack:
            element = stack.pop()
            stack.extend(element.children or [])
            if "Text" in element.props and "ID" in element.props:
                if element.props["ID"] == element.props["Text"]:  # a Button: ID and Text alike here
                    self.buttons.append(element.props["ID"])
                else:
                    self.labels[element.props["ID"]] = _Label(ui, element.props["Text"])
        self.shown = False

    def Find(self, wid: str) -> _Label:
        return self.labels[wid]

    def Show(self) -> None:
        self.shown = True
        self.ui.windows.append(self.id)

    def Hide(self) -> None:
        self.shown = False


class FakeDispatcher:
    def __init__(self, ui: FakeUI) -> None:
        self.ui = ui
        self.On = _Handlers()
        self.window: FakeWindow | None = None
        self.running = False

    def AddWindow(self, props: dict[str, Any], layout: Any) -> FakeWindow:
        self.window = FakeWindow(self.ui, props, layout)
        return self.window

    def ExitLoop(self) -> None:
        self.running = False

    def RunLoop(self) -> None:
        """Deliver events until ExitLoop: a Timeout every 10 ms while a timer runs, and a click on the
        button ``press`` names for the text shown."""
        self.running = True
        deadline = time.monotonic() + 60
        while self.running and time.monotonic() < deadline:
            window = self.window
            assert window is not None
            pressed = self.ui.press(self.ui.texts[-1]) if self.ui.texts else None
            if pressed in window.buttons:
                getattr(window.On, pressed).Clicked(None)
            if getattr(self.ui, "timer", {}).get("running") and callable(self.On.Timeout):
                self.On.Timeout(None)
            time.sleep(0.01)


def fake_bmd(ui: FakeUI) -> types.SimpleNamespace:
    """``bmd`` as a Resolve script gets it: ``bmd.UIDispatcher(ui)``."""
    return types.SimpleNamespace(UIDispatcher=lambda manager: manager.dispatcher())
