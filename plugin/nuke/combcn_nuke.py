"""The "CombCN Inpaint" node for Nuke: a Group that runs ``combcn inpaint`` and reads the result back.

The node (Nodes menu > CombCN > CombCN Inpaint) has a Source and a Matte input and these knobs:
first/last frame, matte channel, invert, expand, feather, shaper, device, weights, output and a
Render button. Render:

1. finds the plate and matte files: an upstream Read of an EXR/DPX sequence is used as it is;
   anything else is first rendered (in the main thread, by an internal Write and ``nuke.execute``)
   to a temporary EXR sequence beside the output;
2. runs ``combcn inpaint ... --progress json`` in a background thread with a ``nuke.ProgressTask``
   whose Cancel stops the engine process;
3. points the Group's internal Read at the written EXR sequence and switches the output to it.

No inpainting happens in Nuke's process: the engine is the ``combcn`` program (see combcn_host).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading

import nuke

_COMMON = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "common")
if os.path.isdir(_COMMON) and os.path.abspath(_COMMON) not in sys.path:
    sys.path.insert(0, os.path.abspath(_COMMON))

import combcn_host  # noqa: E402  (found through the path set just above)

NODE_CLASS_LABEL = "CombCN Inpaint"
MATTE_CHANNELS = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}
SHAPERS = ["auto", "acescct", "log", "none", "srgb"]
DEVICES = ["auto", "cpu", "cuda"]
DIRECT_EXTENSIONS = (".exr", ".dpx")  # what the engine reads with the same pixel values as Nuke's Read
UPSTREAM_FOLDER = ".combcn-upstream"

# Engine runs in flight, by node full name: a second Render on the same node is refused.
_jobs: dict[str, combcn_host.EngineProcess | None] = {}
_jobs_lock = threading.Lock()


def set_installed_executable(path: str) -> None:
    """Called from the block install/install-nuke.sh writes into ~/.nuke/init.py."""
    combcn_host.set_installed_executable(path)


def add_menu() -> None:
    """Add Nodes > CombCN > CombCN Inpaint (menu.py calls this; GUI sessions only)."""
    menu = nuke.menu("Nodes").addMenu("CombCN")
    menu.addCommand(NODE_CLASS_LABEL, "import combcn_nuke; combcn_nuke.create_node()")


def _add(node: nuke.Node, knob: nuke.Knob, tooltip: str) -> None:
    knob.setTooltip(tooltip)
    node.addKnob(knob)


def create_node() -> nuke.Group:
    """Create a CombCN Inpaint Group (connected to the selection, as any new node) and return it."""
    node = nuke.createNode("Group", inpanel=False)
    if not isinstance(node, nuke.Group):
        raise TypeError(f"nuke.createNode('Group') gave a {type(node).__name__}")
    group = node
    group.setName("CombCNInpaint")
    with group:
        for default in group.nodes():  # a Group made like the toolbar's may hold Input1 -> Output1
            nuke.delete(default)
        source = nuke.nodes.Input(name="Source")  # created first: input 0
        matte = nuke.nodes.Input(name="Matte")  # input 1
        result = nuke.nodes.Read(name="Result")
        switch = nuke.nodes.Switch(name="ShowResult")
        switch.setInput(0, source)
        switch.setInput(1, result)
        switch["which"].setValue(0)
        output = nuke.nodes.Output(name="Output")
        output.setInput(0, switch)
        matte.setXYpos(source.xpos() + 150, source.ypos())

    root = nuke.root()
    _add(group, nuke.Tab_Knob("combcn", "CombCN"), "")
    first = nuke.Int_Knob("first", "frame range")
    first.setValue(root.firstFrame())
    _add(group, first, "first frame to write (frames outside the range are read for context)")
    last = nuke.Int_Knob("last", "")
    last.setValue(root.lastFrame())
    last.clearFlag(nuke.STARTLINE)
    _add(group, last, "last frame to write")
    from_input = nuke.PyScript_Knob(
        "range_from_input", "from input", "import combcn_nuke; combcn_nuke.range_from_input(nuke.thisNode())"
    )
    from_input.clearFlag(nuke.STARTLINE)
    _add(group, from_input, "set the frame range to the Source input's range")
    _add(
        group,
        nuke.Enumeration_Knob("matte_channel", "matte channel", list(MATTE_CHANNELS)),
        "channel of the Matte input that marks what to remove (1 = remove); without a Matte input "
        "the Source's alpha is used",
    )
    invert = nuke.Boolean_Knob("invert", "invert")
    invert.clearFlag(nuke.STARTLINE)
    _add(group, invert, "invert the matte (for mattes where 1 = keep)")
    _add(group, nuke.Int_Knob("expand", "expand"), "grow the hole by this many pixels (negative erodes)")
    _add(group, nuke.Double_Knob("feather", "feather"), "soft edge of this many pixels outside the hole")
    _add(
        group,
        nuke.Enumeration_Knob("shaper", "shaper", SHAPERS),
        "colour shaper into the network's range: auto = acescct for float plates",
    )
    _add(group, nuke.Enumeration_Knob("device", "device", DEVICES), "auto = cuda when present, else cpu")
    _add(group, nuke.File_Knob("weights", "weights"), "weights file (empty = the shipped weights)")
    track = nuke.Boolean_Knob("track", "track camera")
    track.setValue(True)
    _add(
        group,
        track,
        "build the clean plate through a track of the camera (off: the locked-off plate, for a shot "
        "where the track goes wrong)",
    )
    _add(
        group,
        nuke.File_Knob("output", "output"),
        "EXR sequence to write, e.g. /shots/sh010/clean/plate.####.exr (empty = beside the Nuke script)",
    )
    _add(
        group,
        nuke.PyScript_Knob("render", "Render", "import combcn_nuke; combcn_nuke.render(nuke.thisNode())"),
        "run combcn inpaint in the background and read the result back",
    )
    _add(group, nuke.Text_Knob("status", "", "not rendered"), "")
    return group


def range_from_input(node: nuke.Node) -> None:
    """Set first/last from the Source input's frame range."""
    upstream = node.input(0)
    if upstream is None:
        nuke.message("CombCN: connect a plate to the Source input first.")
        return
    node["first"].setValue(upstream.firstFrame())
    node["last"].setValue(upstream.lastFrame())


def _direct_sequence(upstream: nuke.Node) -> str | None:
    """The file pattern of a plain Read of an EXR/DPX sequence, else None."""
    if upstream.Class() != "Read":
        return None
    offset = upstream.knob("frame")
    if offset is not None and str(offset.value()).strip() not in ("", "0"):
        return None  # frame expressions/offsets change which file a frame reads
    path = nuke.filename(upstream)
    if not path or not path.lower().endswith(DIRECT_EXTENSIONS):
        return None
    return path


def _render_upstream(
    group: nuke.Group, input_name: str, channels: str, folder: str, first: int, last: int
) -> str:
    """Render the group's input ``input_name`` to ``folder/<input>.####.exr`` (main thread) and return it."""
    os.makedirs(folder, exist_ok=True)
    pattern = os.path.join(folder, input_name.lower() + ".####.exr")
    with group:
        node_input = group.node(input_name)
        write = nuke.nodes.Write(name="CombCNUpstream" + input_name)
        try:
            write.setInput(0, node_input)
            write["file"].setValue(pattern)
            write["file_type"].setValue("exr")
            write["channels"].setValue(channels)
            write["datatype"].setValue("32 bit float")
            write["raw"].setValue(True)  # working-space values, as the internal Read reads them back
            nuke.execute(write, first, last)
        finally:
            nuke.delete(write)
    return pattern


def _default_output(node: nuke.Node) -> str:
    script = nuke.root().name()
    if not script or script == "Root":
        raise combcn_host.HostError(
            "set the output knob (the Nuke script is unsaved, so there is no default)"
        )
    folder = os.path.join(os.path.dirname(os.path.abspath(script)), "combcn", node.name())
    return os.path.join(folder, node.name() + ".####.exr")


def _prepare(group: nuke.Group) -> tuple[combcn_host.InpaintRequest, dict[str, object], str | None]:
    """Main thread: read the knobs, find or render the inputs.

    Returns (request, knob values for the internal Result Read, temporary folder or None).
    """
    first = int(group["first"].value())
    last = int(group["last"].value())
    if last < first:
        raise combcn_host.HostError(f"the frame range {first}-{last} is empty; set first <= last")
    output = str(group["output"].value() or "").strip() or _default_output(group)
    if not output.lower().endswith(".exr"):
        raise combcn_host.HostError(f"the output must be an EXR sequence (…/name.####.exr), not {output}")
    source_node = group.input(0)
    if source_node is None:
        raise combcn_host.HostError("connect a plate to the Source input")
    matte_node = group.input(1)

    temp: str | None = None
    read_knobs: dict[str, object] = {}
    source = _direct_sequence(source_node)
    if source is not None:
        for name in ("colorspace", "raw"):  # read the result as the plate is read
            knob = source_node.knob(name)
            if knob is not None:
                read_knobs[name] = knob.value()
    matte = _direct_sequence(matte_node) if matte_node is not None else None
    if source is None or (matte_node is not None and matte is None):
        temp = os.path.join(os.path.dirname(os.path.abspath(output)), UPSTREAM_FOLDER, group.name())
        try:
            if source is None:
                source = _render_upstream(group, "Source", "all", temp, first, last)
                read_knobs = {"raw": True}
            if matte_node is not None and matte is None:
                matte = _render_upstream(group, "Matte", "rgba", temp, first, last)
        except BaseException:
            _remove_temp(temp)  # a failed or cancelled pre-render leaves nothing behind
            raise

    def choice(name: str) -> str | None:
        value = str(group[name].value())
        return None if value == "auto" else value

    request = combcn_host.InpaintRequest(
        source=source,
        output=output,
        first=first,
        last=last,
        matte=matte,
        matte_channel=MATTE_CHANNELS[str(group["matte_channel"].value())] if matte else None,
        invert=bool(group["invert"].value()),
        expand=int(group["expand"].value()),
        feather=float(group["feather"].value()),
        shaper=choice("shaper"),
        device=choice("device"),
        weights=str(group["weights"].value() or "").strip() or None,
        track=bool(group["track"].value()),
        overwrite=True,  # Render means render again; the engine still refuses to overwrite its input
    )
    return request, read_knobs, temp


def render(node: nuke.Node) -> threading.Thread | None:
    """The Render button: prepare in the main thread, then run the engine in a background thread.

    Returns the worker thread (None when nothing was started); errors become a ``nuke.message``.
    """
    if not isinstance(node, nuke.Group):
        nuke.message("CombCN: Render works on a CombCN Inpaint group.")
        return None
    key = node.fullName()
    with _jobs_lock:
        if key in _jobs:
            nuke.message(f"CombCN: {key} is already rendering; cancel it in the progress panel first.")
            return None
        _jobs[key] = None
    temp: str | None = None
    try:
        executable = combcn_host.find_executable()  # before any pre-render: fail fast
        request, read_knobs, temp = _prepare(node)
        proc = combcn_host.EngineProcess(request, executable)
    except (combcn_host.HostError, RuntimeError) as exc:
        if temp is not None:
            _remove_temp(temp)
        with _jobs_lock:
            _jobs.pop(key, None)
        nuke.message(f"CombCN: {exc}")
        return None
    node["status"].setValue(f"rendering {request.first}-{request.last} ...")
    worker = threading.Thread(
        target=_run, args=(key, proc, read_knobs, temp), name=f"combcn {key}", daemon=True
    )
    worker.start()
    return worker


def _run(key: str, proc: combcn_host.EngineProcess, read_knobs: dict[str, object], temp: str | None) -> None:
    """Background thread: run the engine under a ProgressTask; report back in the main thread.

    The task's panel closes when this function returns and the task is released.
    """
    request = proc.request
    task = nuke.ProgressTask(f"CombCN Inpaint {key}")
    task.setMessage(f"starting combcn for frames {request.first}-{request.last}")

    def progress(p: combcn_host.Progress) -> None:
        task.setProgress(p.percent)
        task.setMessage(f"frame {p.frame} ({p.done}/{p.total})")

    try:
        with _jobs_lock:
            _jobs[key] = proc
        proc.start()
        result = proc.wait(on_progress=progress, should_cancel=task.isCancelled)
    except combcn_host.Cancelled as exc:
        nuke.executeInMainThread(_set_status, args=(key, f"cancelled: {exc}"))
    except combcn_host.HostError as exc:
        nuke.executeInMainThread(_set_status, args=(key, f"failed: {exc}"))
        nuke.executeInMainThread(nuke.message, args=(f"CombCN Inpaint {key} failed:\n{exc}",))
    else:
        status = f"rendered {result.written} frame(s) {request.first}-{request.last}"
        nuke.executeInMainThread(
            _load_result, args=(key, request.output, request.first, request.last, read_knobs)
        )
        nuke.executeInMainThread(_set_status, args=(key, status))
    finally:
        if temp is not None:
            _remove_temp(temp)
        with _jobs_lock:
            _jobs.pop(key, None)


def _remove_temp(temp: str) -> None:
    """Delete the pre-rendered inputs, and their parent folder if no other node uses it."""
    shutil.rmtree(temp, ignore_errors=True)
    parent = os.path.dirname(temp)
    if os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)


def _set_status(key: str, text: str) -> None:
    node = nuke.toNode(key)
    if node is not None:
        node["status"].setValue(text)


def _load_result(key: str, output: str, first: int, last: int, read_knobs: dict[str, object]) -> None:
    """Main thread: point the internal Read at the written sequence and show it."""
    node = nuke.toNode(key)
    if not isinstance(node, nuke.Group):
        return  # deleted while rendering
    read = node.node("Result")
    switch = node.node("ShowResult")
    if read is None or switch is None:
        nuke.message(f"CombCN: {key} lost its internal Result/ShowResult nodes; the frames are in {output}")
        return
    read["file"].setValue(output.replace(os.sep, "/"))
    for name in ("first", "origfirst"):
        read[name].setValue(first)
    for name in ("last", "origlast"):
        read[name].setValue(last)
    for name, value in read_knobs.items():
        read[name].setValue(value)
    switch["which"].setValue(1)
