"""A headless OpenFX 1.x host in Python (ctypes), written for testing the CombCN plugin.

It loads a bundle's ``.ofx`` with dlopen, calls ``OfxGetNumberOfPlugins``/``OfxGetPlugin``, gives the
plugin our property, image-effect, parameter and message suites, then runs load, describe,
describeInContext, createInstance, getClipPreferences and, for each frame, getFramesNeeded,
getRegionsOfInterest, isIdentity and render. Clips serve a different EXR frame per time (read with
OpenImageIO); the Source is handed out top-down with a negative row stride (allowed by the spec) and
the Mask bottom-up, so both layouts are exercised. The optional Reference clip serves the frames of
its pattern that exist on disk, each at its own size (a Reference of another size than the plate).
The host enforces the temporal-access rule: an image at another time than the render time must lie
inside the frames the plugin declared needed.

Run ``python -m ofx_host.host JOB.json`` (the tests do, in a subprocess, so a crash of the plugin is
seen as a crash and not taken down with pytest). Suite varargs functions (paramGetValue, message) are
received through fixed-signature callbacks: on x86-64 System V, variadic arguments travel in the same
registers as fixed ones, so this is exact for the pointer/double arguments the plugin passes.
"""

from __future__ import annotations

import ctypes as C
import json
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import OpenImageIO as oiio

OK, FAILED, ERR_FATAL, ERR_UNKNOWN, ERR_MISSING, ERR_UNSUPPORTED = 0, 1, 2, 3, 4, 5
ERR_BAD_HANDLE, ERR_BAD_INDEX, ERR_VALUE, REPLY_DEFAULT = 9, 10, 11, 14

GENERAL = "OfxImageEffectContextGeneral"
FILTER = "OfxImageEffectContextFilter"

# ---- ABI ---------------------------------------------------------------------------------------

P = C.c_void_p
S = C.c_char_p
I = C.c_int  # noqa: E741
D = C.c_double
F = C.CFUNCTYPE

FetchSuite = F(P, P, S, I)
EntryPoint = F(I, S, P, P, P)


class OfxHostStruct(C.Structure):
    _fields_ = [("host", P), ("fetchSuite", FetchSuite)]


class OfxPluginStruct(C.Structure):
    _fields_ = [
        ("pluginApi", S),
        ("apiVersion", I),
        ("pluginIdentifier", S),
        ("pluginVersionMajor", C.c_uint),
        ("pluginVersionMinor", C.c_uint),
        ("setHost", F(None, C.POINTER(OfxHostStruct))),
        ("mainEntry", EntryPoint),
    ]


def suite(name: str, fields: list[tuple[str, Any]]) -> type[C.Structure]:
    return type(name, (C.Structure,), {"_fields_": fields})


PropertySuite = suite(
    "PropertySuite",
    [
        ("propSetPointer", F(I, P, S, I, P)),
        ("propSetString", F(I, P, S, I, S)),
        ("propSetDouble", F(I, P, S, I, D)),
        ("propSetInt", F(I, P, S, I, I)),
        ("propSetPointerN", F(I, P, S, I, C.POINTER(P))),
        ("propSetStringN", F(I, P, S, I, C.POINTER(S))),
        ("propSetDoubleN", F(I, P, S, I, C.POINTER(D))),
        ("propSetIntN", F(I, P, S, I, C.POINTER(I))),
        ("propGetPointer", F(I, P, S, I, C.POINTER(P))),
        ("propGetString", F(I, P, S, I, C.POINTER(P))),
        ("propGetDouble", F(I, P, S, I, C.POINTER(D))),
        ("propGetInt", F(I, P, S, I, C.POINTER(I))),
        ("propGetPointerN", F(I, P, S, I, C.POINTER(P))),
        ("propGetStringN", F(I, P, S, I, C.POINTER(P))),
        ("propGetDoubleN", F(I, P, S, I, C.POINTER(D))),
        ("propGetIntN", F(I, P, S, I, C.POINTER(I))),
        ("propReset", F(I, P, S)),
        ("propGetDimension", F(I, P, S, C.POINTER(I))),
    ],
)

ImageEffectSuite = suite(
    "ImageEffectSuite",
    [
        ("getPropertySet", F(I, P, C.POINTER(P))),
        ("getParamSet", F(I, P, C.POINTER(P))),
        ("clipDefine", F(I, P, S, C.POINTER(P))),
        ("clipGetHandle", F(I, P, S, C.POINTER(P), C.POINTER(P))),
        ("clipGetPropertySet", F(I, P, C.POINTER(P))),
        ("clipGetImage", F(I, P, D, C.POINTER(D), C.POINTER(P))),
        ("clipReleaseImage", F(I, P)),
        ("clipGetRegionOfDefinition", F(I, P, D, C.POINTER(D))),
        ("abort", F(I, P)),
        ("imageMemoryAlloc", F(I, P, C.c_size_t, C.POINTER(P))),
        ("imageMemoryFree", F(I, P)),
        ("imageMemoryLock", F(I, P, C.POINTER(P))),
        ("imageMemoryUnlock", F(I, P)),
    ],
)

ParameterSuite = suite(
    "ParameterSuite",
    [
        ("paramDefine", F(I, P, S, S, C.POINTER(P))),
        ("paramGetHandle", F(I, P, S, C.POINTER(P), C.POINTER(P))),
        ("paramSetGetPropertySet", F(I, P, C.POINTER(P))),
        ("paramGetPropertySet", F(I, P, C.POINTER(P))),
        ("paramGetValue", F(I, P, P)),
        ("paramGetValueAtTime", F(I, P, D, P)),
        ("paramGetDerivative", F(I, P, D, P)),
        ("paramGetIntegral", F(I, P, D, D, P)),
        ("paramSetValue", F(I, P, P)),
        ("paramSetValueAtTime", F(I, P, D, P)),
        ("paramGetNumKeys", F(I, P, C.POINTER(C.c_uint))),
        ("paramGetKeyTime", F(I, P, C.c_uint, C.POINTER(D))),
        ("paramGetKeyIndex", F(I, P, D, I, C.POINTER(I))),
        ("paramDeleteKey", F(I, P, D)),
        ("paramDeleteAllKeys", F(I, P)),
        ("paramCopy", F(I, P, P, D, P)),
        ("paramEditBegin", F(I, P, S)),
        ("paramEditEnd", F(I, P)),
    ],
)

MessageSuite = suite("MessageSuite", [("message", F(I, P, S, S, S, S))])
MessageSuiteV2 = suite(
    "MessageSuiteV2",
    [
        ("message", F(I, P, S, S, S, S)),
        ("setPersistentMessage", F(I, P, S, S, S, S)),
        ("clearPersistentMessage", F(I, P)),
    ],
)


# ---- host objects ------------------------------------------------------------------------------


class Registry:
    """Maps the opaque handles given to the plugin to Python objects (handles are fake addresses)."""

    def __init__(self) -> None:
        self.objects: dict[int, Any] = {}
        self.next = 0x10000
        self.lock = threading.Lock()

    def add(self, obj: Any) -> int:
        with self.lock:
            self.next += 0x10
            self.objects[self.next] = obj
            obj.handle = self.next
            return self.next

    def get(self, handle: int | None) -> Any:
        return self.objects.get(handle or 0)


@dataclass(eq=False)
class PropertySet:
    name: str
    values: dict[str, list[Any]] = field(default_factory=dict)
    handle: int = 0

    def set(self, key: str, *values: Any) -> None:
        self.values[key] = list(values)

    def first(self, key: str, default: Any = None) -> Any:
        v = self.values.get(key)
        return v[0] if v else default


@dataclass(eq=False)
class Param:
    kind: str
    name: str
    props: PropertySet
    value: Any = None
    handle: int = 0


@dataclass(eq=False)
class Clip:
    name: str
    props: PropertySet
    frames: dict[int, np.ndarray] = field(default_factory=dict)  # time -> top-down (H, W, C) float32
    top_down_negative_stride: bool = False
    handle: int = 0


@dataclass(eq=False)
class Effect:
    props: PropertySet
    params: PropertySet
    param_list: dict[str, Param] = field(default_factory=dict)
    clips: dict[str, Clip] = field(default_factory=dict)
    handle: int = 0


@dataclass(eq=False)
class Image:
    props: PropertySet
    buffer: np.ndarray
    clip: str
    time: float
    handle: int = 0


class HostError(Exception):
    pass


class Host:
    """One host process: loads one plugin binary and drives one instance of it."""

    def __init__(self, message_v2: bool = False) -> None:
        self.reg = Registry()
        self.messages: list[dict[str, str]] = []
        self.message_v2 = message_v2  # offer OfxMessageSuiteV2 (persistent messages) too
        self.persistent: list[dict[str, str]] = []  # set/clear events of persistent messages, in order
        self.violations: list[str] = []
        self.images: dict[int, Image] = {}  # all threads' live images, by handle
        self.lock = threading.RLock()  # handles and shared lists; callbacks may come from many threads
        self.tls = threading.local()  # per render thread: rendering, frames_needed, fetches, output
        self.concurrent = 0
        self.max_concurrent = 0
        self.abort_after: int | None = None  # abort() answers 1 from its Nth call on (None = never)
        self.abort_calls = 0
        self.source_depth = "OfxBitDepthFloat"  # what Source images claim to be (tests a wrong depth)
        self._strings: dict[tuple[int, str, int], C.Array[C.c_char]] = {}
        self.host_props = PropertySet("host")
        self.reg.add(self.host_props)
        hp = self.host_props
        hp.set("OfxPropName", "io.github.combcn.testhost")
        hp.set("OfxPropLabel", "combcn test host")
        hp.set("OfxPropAPIVersion", 1, 4)
        hp.set("OfxImageEffectHostPropIsBackground", 1)
        hp.set("OfxImageEffectPropSupportsOverlays", 0)
        hp.set("OfxImageEffectPropSupportsMultiResolution", 0)
        hp.set("OfxImageEffectPropSupportsTiles", 1)
        hp.set("OfxImageEffectPropTemporalClipAccess", 1)
        hp.set("OfxImageEffectPropSupportsMultipleClipDepths", 0)
        hp.set("OfxImageEffectPropSupportedComponents", "OfxImageComponentRGBA", "OfxImageComponentAlpha")
        hp.set("OfxImageEffectPropSupportedContexts", GENERAL, FILTER)
        hp.set("OfxImageEffectPropSupportedPixelDepths", "OfxBitDepthFloat")
        hp.set("OfxImageEffectHostPropNativeOrigin", "OfxImageEffectHostPropNativeOriginBottomLeft")
        self._build_suites()

    # ---- suites ------------------------------------------------------------------------------

    def _props(self, handle: int | None) -> PropertySet | None:
        obj = self.reg.get(handle)
        return obj if isinstance(obj, PropertySet) else None

    def _build_suites(self) -> None:
        cb = self._callbacks = {}  # keep every callback alive as long as the host

        def guard(fn: Any) -> Any:
            def wrapped(*args: Any) -> int:
                try:
                    return int(fn(*args))
                except Exception:  # noqa: BLE001 - a host bug must not unwind through C frames
                    traceback.print_exc()
                    self.violations.append(f"host exception in {fn.__name__}")
                    return ERR_UNKNOWN

            wrapped.__name__ = fn.__name__
            return wrapped

        def setter(conv: Any) -> Any:
            def prop_set(h: int, name: bytes, index: int, value: Any) -> int:
                props = self._props(h)
                if props is None:
                    return ERR_BAD_HANDLE
                vals = props.values.setdefault(name.decode(), [])
                while len(vals) <= index:
                    vals.append(None)
                vals[index] = conv(value)
                return OK

            return prop_set

        def setter_n(conv: Any) -> Any:
            def prop_set_n(h: int, name: bytes, count: int, values: Any) -> int:
                props = self._props(h)
                if props is None:
                    return ERR_BAD_HANDLE
                props.values[name.decode()] = [conv(values[i]) for i in range(count)]
                return OK

            return prop_set_n

        def fetch(h: int, name: bytes, index: int) -> tuple[int, Any]:
            props = self._props(h)
            if props is None:
                return ERR_BAD_HANDLE, None
            vals = props.values.get(name.decode())
            if vals is None:
                return ERR_UNKNOWN, None
            if not 0 <= index < len(vals):
                return ERR_BAD_INDEX, None
            return OK, vals[index]

        def getter(store: Any) -> Any:
            def prop_get(h: int, name: bytes, index: int, out: Any) -> int:
                st, v = fetch(h, name, index)
                if st == OK:
                    store(h, name, index, out, 0, v)
                return st

            return prop_get

        def getter_n(store: Any) -> Any:
            def prop_get_n(h: int, name: bytes, count: int, out: Any) -> int:
                for i in range(count):
                    st, v = fetch(h, name, i)
                    if st != OK:
                        return st
                    store(h, name, i, out, i, v)
                return OK

            return prop_get_n

        def store_ptr(h: int, name: bytes, idx: int, out: Any, slot: int, v: Any) -> None:
            out[slot] = v or None

        def store_str(h: int, name: bytes, idx: int, out: Any, slot: int, v: Any) -> None:
            buf = C.create_string_buffer(str(v if v is not None else "").encode())
            self._strings[(h, name.decode(), idx)] = buf  # valid until the property changes again
            out[slot] = C.cast(buf, P).value

        def store_num(h: int, name: bytes, idx: int, out: Any, slot: int, v: Any) -> None:
            out[slot] = v if v is not None else 0

        def prop_reset(h: int, name: bytes) -> int:
            return OK

        def prop_dim(h: int, name: bytes, count: Any) -> int:
            props = self._props(h)
            if props is None:
                return ERR_BAD_HANDLE
            if name.decode() not in props.values:
                return ERR_UNKNOWN
            count[0] = len(props.values[name.decode()])
            return OK

        ps = PropertySuite()
        funcs: dict[str, Any] = {
            "propSetPointer": setter(lambda v: v),
            "propSetString": setter(lambda v: v.decode()),
            "propSetDouble": setter(float),
            "propSetInt": setter(int),
            "propSetPointerN": setter_n(lambda v: v),
            "propSetStringN": setter_n(lambda v: v.decode()),
            "propSetDoubleN": setter_n(float),
            "propSetIntN": setter_n(int),
            "propGetPointer": getter(store_ptr),
            "propGetString": getter(store_str),
            "propGetDouble": getter(store_num),
            "propGetInt": getter(store_num),
            "propGetPointerN": getter_n(store_ptr),
            "propGetStringN": getter_n(store_str),
            "propGetDoubleN": getter_n(store_num),
            "propGetIntN": getter_n(store_num),
            "propReset": prop_reset,
            "propGetDimension": prop_dim,
        }
        for fname, ftype in PropertySuite._fields_:
            cb[fname] = ftype(guard(funcs[fname]))
            setattr(ps, fname, cb[fname])
        self.property_suite = ps

        es = ImageEffectSuite()
        efuncs = {
            "getPropertySet": self._get_property_set,
            "getParamSet": self._get_param_set,
            "clipDefine": self._clip_define,
            "clipGetHandle": self._clip_get_handle,
            "clipGetPropertySet": self._clip_get_property_set,
            "clipGetImage": self._clip_get_image,
            "clipReleaseImage": self._clip_release_image,
            "clipGetRegionOfDefinition": self._clip_get_rod,
            "abort": self._abort,
            "imageMemoryAlloc": lambda *a: ERR_UNSUPPORTED,
            "imageMemoryFree": lambda *a: ERR_UNSUPPORTED,
            "imageMemoryLock": lambda *a: ERR_UNSUPPORTED,
            "imageMemoryUnlock": lambda *a: ERR_UNSUPPORTED,
        }
        for fname, ftype in ImageEffectSuite._fields_:
            cb["e." + fname] = ftype(guard(efuncs[fname]))
            setattr(es, fname, cb["e." + fname])
        self.effect_suite = es

        pa = ParameterSuite()
        pfuncs = {
            "paramDefine": self._param_define,
            "paramGetHandle": self._param_get_handle,
            "paramSetGetPropertySet": self._get_property_set_of_paramset,
            "paramGetPropertySet": self._param_get_property_set,
            "paramGetValue": lambda h, out: self._param_get_value(h, out),
            "paramGetValueAtTime": lambda h, t, out: self._param_get_value(h, out),
        }
        for fname, ftype in ParameterSuite._fields_:
            cb["p." + fname] = ftype(guard(pfuncs.get(fname, lambda *a: ERR_UNSUPPORTED)))
            setattr(pa, fname, cb["p." + fname])
        self.param_suite = pa

        ms = MessageSuite()

        def formatted(fmt: bytes, arg: int) -> str:
            text = fmt.decode(errors="replace")
            if text == "%s" and arg:
                text = C.string_at(arg).decode(errors="replace")
            return text

        def message(h: int, kind: bytes, msg_id: bytes, fmt: bytes, arg: int) -> int:
            text = formatted(fmt, arg)
            self.messages.append({"type": kind.decode(), "id": (msg_id or b"").decode(), "text": text})
            return OK

        def set_persistent(h: int, kind: bytes, msg_id: bytes, fmt: bytes, arg: int) -> int:
            if not isinstance(self.reg.get(h), Effect):
                return ERR_BAD_HANDLE
            text = formatted(fmt, arg)
            with self.lock:
                self.persistent.append({"op": "set", "type": kind.decode(), "text": text})
            return OK

        def clear_persistent(h: int) -> int:
            if not isinstance(self.reg.get(h), Effect):
                return ERR_BAD_HANDLE
            with self.lock:
                self.persistent.append({"op": "clear"})
            return OK

        cb["m.message"] = MessageSuite._fields_[0][1](guard(message))
        ms.message = cb["m.message"]
        self.message_suite = ms
        ms2 = MessageSuiteV2()
        for fname, ftype in MessageSuiteV2._fields_:
            fn = {"message": message, "setPersistentMessage": set_persistent}.get(fname, clear_persistent)
            cb["m2." + fname] = ftype(guard(fn))
            setattr(ms2, fname, cb["m2." + fname])
        self.message_suite_v2 = ms2

        def fetch_suite(host: int, name: bytes, version: int) -> int | None:
            suites = {
                (b"OfxPropertySuite", 1): self.property_suite,
                (b"OfxImageEffectSuite", 1): self.effect_suite,
                (b"OfxParameterSuite", 1): self.param_suite,
                (b"OfxMessageSuite", 1): self.message_suite,
            }
            if self.message_v2:
                suites[(b"OfxMessageSuite", 2)] = self.message_suite_v2
            s = suites.get((name, version))
            return C.addressof(s) if s is not None else None

        cb["fetchSuite"] = FetchSuite(fetch_suite)
        self.host_struct = OfxHostStruct(self.host_props.handle, cb["fetchSuite"])

    # image effect suite
    def _get_property_set(self, effect: int, out: Any) -> int:
        e = self.reg.get(effect)
        if not isinstance(e, Effect):
            return ERR_BAD_HANDLE
        out[0] = e.props.handle
        return OK

    def _get_param_set(self, effect: int, out: Any) -> int:
        e = self.reg.get(effect)
        if not isinstance(e, Effect):
            return ERR_BAD_HANDLE
        out[0] = e.params.handle
        return OK

    def _clip_define(self, effect: int, name: bytes, out: Any) -> int:
        e = self.reg.get(effect)
        if not isinstance(e, Effect):
            return ERR_BAD_HANDLE
        props = PropertySet(f"clip {name.decode()}")
        self.reg.add(props)
        props.set("OfxPropName", name.decode())
        clip = Clip(name.decode(), props)
        self.reg.add(clip)
        e.clips[name.decode()] = clip
        out[0] = props.handle
        return OK

    def _clip_get_handle(self, effect: int, name: bytes, clip_out: Any, props_out: Any) -> int:
        e = self.reg.get(effect)
        if not isinstance(e, Effect):
            return ERR_BAD_HANDLE
        clip = e.clips.get(name.decode())
        if clip is None:
            return ERR_UNKNOWN
        clip_out[0] = clip.handle
        if props_out:
            props_out[0] = clip.props.handle
        return OK

    def _clip_get_property_set(self, clip: int, out: Any) -> int:
        c = self.reg.get(clip)
        if not isinstance(c, Clip):
            return ERR_BAD_HANDLE
        out[0] = c.props.handle
        return OK

    def _clip_get_rod(self, clip: int, t: float, out: Any) -> int:
        c = self.reg.get(clip)
        if not isinstance(c, Clip):
            return ERR_BAD_HANDLE
        h, w = self.size
        for i, v in enumerate((0.0, 0.0, float(w), float(h))):
            out[i] = v
        return OK

    def _clip_get_image(self, clip: int, t: float, region: Any, out: Any) -> int:
        c = self.reg.get(clip)
        if not isinstance(c, Clip):
            return ERR_BAD_HANDLE
        tls = self.tls
        if getattr(tls, "rendering", None) is None:
            self.violations.append(f"clipGetImage({c.name}, {t}) outside the render action")
            return ERR_VALUE
        if t != tls.rendering and c.name != "Output":
            lo, hi = tls.frames_needed.get(c.name, (tls.rendering, tls.rendering))
            if not lo <= t <= hi:
                self.violations.append(
                    f"clipGetImage({c.name}, {t}) outside the declared frames needed {lo}-{hi}"
                )
                return ERR_VALUE
        tls.fetches.append((c.name, t))
        h, w = self.size
        comps = c.props.first("OfxImageEffectPropComponents", "OfxImageComponentRGBA")
        nc = 1 if comps == "OfxImageComponentAlpha" else 4
        if c.name == "Output":
            buf = np.full((h, w, nc), np.nan, np.float32)  # unwritten pixels stay NaN: the test sees them
            tls.output = buf
        else:
            frame = c.frames.get(int(round(t)))
            if frame is None:
                return FAILED  # no image at that time
            buf = np.ascontiguousarray(frame, np.float32)
            h, w = buf.shape[:2]  # each image at its own size (the plate's, unless a test says otherwise)
        row = w * nc * 4
        if c.name == "Output" or not c.top_down_negative_stride:
            # Bottom-up memory: row 0 in memory is the lowest image row (OpenFX's native order).
            if c.name != "Output":
                buf = np.ascontiguousarray(buf[::-1])
            data, row_bytes = buf.ctypes.data, row
        else:
            # Top-down memory with a negative stride: the data pointer is the last row in memory.
            data, row_bytes = buf.ctypes.data + (h - 1) * row, -row
        props = PropertySet(f"image {c.name}@{t}")
        with self.lock:
            self.reg.add(props)
        props.set("OfxImagePropData", data)
        props.set("OfxImagePropBounds", 0, 0, w, h)
        props.set("OfxImagePropRegionOfDefinition", 0, 0, w, h)
        props.set("OfxImagePropRowBytes", row_bytes)
        props.set(
            "OfxImageEffectPropPixelDepth", self.source_depth if c.name == "Source" else "OfxBitDepthFloat"
        )
        props.set("OfxImageEffectPropComponents", comps)
        props.set("OfxImagePropPixelAspectRatio", 1.0)
        props.set("OfxImageEffectPropPreMultiplication", c.props.first("OfxImageEffectPropPreMultiplication"))
        props.set("OfxImagePropField", "OfxImageFieldNone")
        props.set("OfxImagePropUniqueIdentifier", f"{c.name}-{t}")
        props.set("OfxImageEffectPropRenderScale", 1.0, 1.0)
        image = Image(props, buf, c.name, t)
        with self.lock:
            self.images[props.handle] = image
        out[0] = props.handle
        return OK

    def _clip_release_image(self, image: int) -> int:
        with self.lock:
            img = self.images.pop(image, None)
        if img is None:
            return ERR_BAD_HANDLE
        if img.clip == "Output":
            self.tls.output = np.ascontiguousarray(img.buffer[::-1])  # back to top-down rows
        return OK

    def _abort(self, effect: int) -> int:
        with self.lock:
            self.abort_calls += 1
            return int(self.abort_after is not None and self.abort_calls >= self.abort_after)

    # parameter suite
    def _param_define(self, paramset: int, kind: bytes, name: bytes, out: Any) -> int:
        ps = self.reg.get(paramset)
        effect = self._effect_of_paramset.get(paramset)
        if not isinstance(ps, PropertySet) or effect is None:
            return ERR_BAD_HANDLE
        props = PropertySet(f"param {name.decode()}")
        self.reg.add(props)
        props.set("OfxPropName", name.decode())
        param = Param(kind.decode(), name.decode(), props)
        self.reg.add(param)
        effect.param_list[name.decode()] = param
        if out:
            out[0] = props.handle
        return OK

    def _param_get_handle(self, paramset: int, name: bytes, out: Any, props_out: Any) -> int:
        effect = self._effect_of_paramset.get(paramset)
        if effect is None:
            return ERR_BAD_HANDLE
        param = effect.param_list.get(name.decode())
        if param is None:
            return ERR_UNKNOWN
        out[0] = param.handle
        if props_out:
            props_out[0] = param.props.handle
        return OK

    def _get_property_set_of_paramset(self, paramset: int, out: Any) -> int:
        out[0] = paramset
        return OK

    def _param_get_property_set(self, param: int, out: Any) -> int:
        p = self.reg.get(param)
        if not isinstance(p, Param):
            return ERR_BAD_HANDLE
        out[0] = p.props.handle
        return OK

    def _param_get_value(self, param: int, out: int) -> int:
        p = self.reg.get(param)
        if not isinstance(p, Param):
            return ERR_BAD_HANDLE
        if p.kind in ("OfxParamTypeInteger", "OfxParamTypeBoolean", "OfxParamTypeChoice"):
            C.cast(out, C.POINTER(C.c_int))[0] = int(p.value)
        elif p.kind == "OfxParamTypeDouble":
            C.cast(out, C.POINTER(C.c_double))[0] = float(p.value)
        elif p.kind == "OfxParamTypeString":
            buf = C.create_string_buffer(str(p.value).encode())
            self._strings[(param, "value", 0)] = buf
            C.cast(out, C.POINTER(P))[0] = C.cast(buf, P).value
        else:
            return ERR_UNSUPPORTED
        return OK

    # ---- driving the plugin --------------------------------------------------------------------

    def load_plugin(self, binary: str, bundle: str) -> dict[str, Any]:
        self.lib = C.CDLL(binary, mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        self.lib.OfxGetNumberOfPlugins.restype = C.c_int
        self.lib.OfxGetPlugin.restype = C.POINTER(OfxPluginStruct)
        self.lib.OfxGetPlugin.argtypes = [C.c_int]
        n = self.lib.OfxGetNumberOfPlugins()
        if n < 1:
            raise HostError(f"the binary declares {n} plugins")
        plugin = self.lib.OfxGetPlugin(0)
        if not plugin:
            raise HostError("OfxGetPlugin(0) returned NULL")
        self.plugin = plugin.contents
        self.bundle = bundle
        info = {
            "count": n,
            "api": self.plugin.pluginApi.decode(),
            "api_version": self.plugin.apiVersion,
            "id": self.plugin.pluginIdentifier.decode(),
            "version": [self.plugin.pluginVersionMajor, self.plugin.pluginVersionMinor],
        }
        if info["api"] != "OfxImageEffectPluginAPI" or info["api_version"] != 1:
            raise HostError(f"not an image effect plugin: {info}")
        self.plugin.setHost(C.byref(self.host_struct))
        self._effect_of_paramset: dict[int, Effect] = {}
        return info

    def action(
        self,
        name: str,
        handle: int | None,
        in_args: PropertySet | None = None,
        out_args: PropertySet | None = None,
    ) -> int:
        return int(
            self.plugin.mainEntry(
                name.encode(),
                handle,
                in_args.handle if in_args else None,
                out_args.handle if out_args else None,
            )
        )

    def new_effect(self, label: str) -> Effect:
        props = PropertySet(f"{label} props")
        params = PropertySet(f"{label} params")
        self.reg.add(props)
        self.reg.add(params)
        e = Effect(props, params)
        self.reg.add(e)
        self._effect_of_paramset[params.handle] = e
        props.set("OfxPropType", "OfxTypeImageEffect" if "instance" in label else "OfxTypeImageEffectHost")
        props.set("OfxPluginPropFilePath", self.bundle)
        return e

    def args(self, **values: Any) -> PropertySet:
        props = PropertySet("args")
        self.reg.add(props)
        for k, v in values.items():
            props.set(k, *(v if isinstance(v, list | tuple) else [v]))
        return props


def read_exr(path: str) -> np.ndarray:
    """(H, W, C) float32, top-down rows."""
    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise HostError(f"cannot open {path}: {oiio.geterror()}")
    try:
        return np.asarray(inp.read_image("float"), np.float32)
    finally:
        inp.close()


def write_exr(path: str, pixels: np.ndarray) -> None:
    out = oiio.ImageOutput.create(path)
    spec = oiio.ImageSpec(pixels.shape[1], pixels.shape[0], pixels.shape[2], "float")
    out.open(path, spec)
    out.write_image(pixels)
    out.close()


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (see the tests): returns statuses, messages, violations and written outputs."""
    host = Host(message_v2=bool(job.get("message_v2", False)))
    result: dict[str, Any] = {
        "renders": [],
        "messages": host.messages,
        "persistent": host.persistent,
        "violations": host.violations,
    }
    result["plugin"] = host.load_plugin(job["binary"], job["bundle"])
    context = job.get("context", GENERAL)
    result["load"] = host.action("OfxActionLoad", None)
    if result["load"] != OK:
        return result

    desc = host.new_effect("descriptor")
    result["describe"] = host.action("OfxActionDescribe", desc.handle)
    result["descriptor"] = {k: v for k, v in desc.props.values.items()}

    ctx_desc = host.new_effect("context descriptor")
    ctx_desc.props.values.update({k: list(v) for k, v in desc.props.values.items()})
    result["describe_in_context"] = host.action(
        "OfxImageEffectActionDescribeInContext", ctx_desc.handle, host.args(OfxImageEffectPropContext=context)
    )
    result["clips"] = {name: dict(c.props.values) for name, c in ctx_desc.clips.items()}
    result["params"] = {
        name: {"type": p.kind, **{k: v for k, v in p.props.values.items()}}
        for name, p in ctx_desc.param_list.items()
    }

    # Instance: clips and params from the context descriptor.
    inst = host.new_effect("instance")
    inst.props.values.update({k: list(v) for k, v in ctx_desc.props.values.items()})
    inst.props.set("OfxImageEffectPropContext", context)
    inst.props.set("OfxPropIsInteractive", 0)
    first, last = job["first"], job["last"]
    sources = {name: job.get(name.lower()) for name in ctx_desc.clips}
    for name, cdesc in ctx_desc.clips.items():
        props = PropertySet(f"instance clip {name}")
        host.reg.add(props)
        props.values.update({k: list(v) for k, v in cdesc.props.values.items()})
        pattern = sources.get(name)
        connected = name == "Output" or bool(pattern)
        comps = "OfxImageComponentAlpha" if name == "Mask" else "OfxImageComponentRGBA"
        props.set("OfxImageClipPropConnected", int(connected))
        props.set("OfxImageEffectPropComponents", comps)
        props.set("OfxImageClipPropUnmappedComponents", comps)
        props.set("OfxImageEffectPropPixelDepth", "OfxBitDepthFloat")
        props.set("OfxImageClipPropUnmappedPixelDepth", "OfxBitDepthFloat")
        props.set("OfxImageEffectPropFrameRange", float(first), float(last))
        props.set("OfxImageEffectPropUnmappedFrameRange", float(first), float(last))
        props.set("OfxImageEffectPropFrameRate", 24.0)
        props.set("OfxImagePropPixelAspectRatio", 1.0)
        premult = (
            "OfxImageAlphaPremultiplied"
            if name == "Source" and job.get("premultiplied")
            else "OfxImageOpaque"
        )
        props.set("OfxImageEffectPropPreMultiplication", premult)
        clip = Clip(name, props, top_down_negative_stride=(name == "Source"))
        host.reg.add(clip)
        if pattern:
            for t in range(first, last + 1):
                if t in job.get("missing", {}).get(name, []):
                    continue  # the clip has no image at that time: clipGetImage answers kOfxStatFailed
                if name == "Reference" and not os.path.exists(pattern % t):
                    continue  # a Reference holds the frames cleaned by hand
                img = read_exr(pattern % t)
                clip.frames[t] = img[..., :1] if name == "Mask" else img
        inst.clips[name] = clip
    src0 = inst.clips["Source"].frames[first]
    host.size = src0.shape[:2]
    for name, pdesc in ctx_desc.param_list.items():
        props = PropertySet(f"instance param {name}")
        host.reg.add(props)
        props.values.update({k: list(v) for k, v in pdesc.props.values.items()})
        param = Param(pdesc.kind, name, props, props.first("OfxParamPropDefault"))
        host.reg.add(param)
        inst.param_list[name] = param
    for name, value in job.get("set_params", {}).items():
        if name not in inst.param_list:
            raise HostError(f"the plugin has no parameter {name!r}")
        inst.param_list[name].value = value
    result["create_instance"] = host.action("OfxActionCreateInstance", inst.handle)

    prefs = host.args()
    result["clip_preferences"] = host.action(
        "OfxImageEffectActionGetClipPreferences", inst.handle, None, prefs
    )
    result["clip_preferences_out"] = dict(prefs.values)

    h, w = host.size
    host.abort_after = job.get("abort_after")
    host.source_depth = job.get("source_depth", host.source_depth)

    def render_one(t: int) -> dict[str, Any]:
        entry: dict[str, Any] = {"time": t}
        tls = host.tls
        fn_out = host.args()
        entry["frames_needed_status"] = host.action(
            "OfxImageEffectActionGetFramesNeeded", inst.handle, host.args(OfxPropTime=float(t)), fn_out
        )
        tls.frames_needed = {}
        for key, vals in fn_out.values.items():
            clip = key.removeprefix("OfxImageClipPropFrameRange_")
            tls.frames_needed[clip] = (min(vals[0::2]), max(vals[1::2]))
        entry["frames_needed"] = {k: list(v) for k, v in tls.frames_needed.items()}
        roi_out = host.args()
        entry["roi_status"] = host.action(
            "OfxImageEffectActionGetRegionsOfInterest",
            inst.handle,
            host.args(
                OfxPropTime=float(t),
                OfxImageEffectPropRenderScale=(1.0, 1.0),
                OfxImageEffectPropRegionOfInterest=(0.0, 0.0, float(w), float(h)),
            ),
            roi_out,
        )
        entry["roi"] = dict(roi_out.values)
        id_out = host.args()
        entry["identity_status"] = host.action(
            "OfxImageEffectActionIsIdentity",
            inst.handle,
            host.args(
                OfxPropTime=float(t),
                OfxImageEffectPropFieldToRender="OfxImageFieldNone",
                OfxImageEffectPropRenderWindow=(0, 0, w, h),
                OfxImageEffectPropRenderScale=(1.0, 1.0),
            ),
            id_out,
        )
        entry["identity"] = dict(id_out.values)
        tls.fetches = []
        tls.rendering = float(t)
        tls.output = None
        with host.lock:
            host.concurrent += 1
            host.max_concurrent = max(host.max_concurrent, host.concurrent)
        t0 = time.monotonic()
        entry["status"] = host.action(
            "OfxImageEffectActionRender",
            inst.handle,
            host.args(
                OfxPropTime=float(t),
                OfxImageEffectPropFieldToRender="OfxImageFieldNone",
                OfxImageEffectPropRenderWindow=(0, 0, w, h),
                OfxImageEffectPropRenderScale=(1.0, 1.0),
                OfxImageEffectPropSequentialRenderStatus=0,
                OfxImageEffectPropInteractiveRenderStatus=0,
                OfxImageEffectPropRenderQualityDraft=0,
            ),
        )
        entry["seconds"] = round(time.monotonic() - t0, 3)
        with host.lock:
            host.concurrent -= 1
        tls.rendering = None
        entry["fetched"] = [[c, f] for c, f in tls.fetches]
        # whether the plugin wrote any pixel of the Output (a failed render must leave it untouched)
        entry["output_written"] = tls.output is not None and not bool(np.isnan(tls.output).all())
        if entry["status"] == OK and tls.output is not None and job.get("out"):
            path = job["out"] % t
            write_exr(path, tls.output)
            entry["output"] = path
        return entry

    threads = int(job.get("threads", 1))
    if threads > 1:
        # Several render threads at once, as hosts do with a plugin that declares itself fully safe.
        with ThreadPoolExecutor(threads) as pool:
            result["renders"] = list(pool.map(render_one, job["render"]))
    else:
        # "edits": upstream changes between renders, {"before": i, "clip", "frame", "add"}: before
        # the i-th render, `add` is added to the RGB of that clip's frame (as when a user edits upstream).
        edits = job.get("edits", [])
        for i, t in enumerate(job["render"]):
            for edit in (e for e in edits if e["before"] == i):
                frame = inst.clips[edit["clip"]].frames[edit["frame"]]
                frame[..., :3] += np.float32(edit["add"])
            result["renders"].append(render_one(t))
    result["max_concurrent_renders"] = host.max_concurrent
    if host.images:
        host.violations.append(f"{len(host.images)} images not released after rendering")
    result["destroy_instance"] = host.action("OfxActionDestroyInstance", inst.handle)
    result["unload"] = host.action("OfxActionUnload", None)
    return result


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        job = json.load(f)
    try:
        result = run_job(job)
        code = 0
    except HostError as exc:
        result = {"host_error": str(exc)}
        code = 3
    with open(job["result"], "w") as f:
        json.dump(result, f, indent=1, default=str)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
