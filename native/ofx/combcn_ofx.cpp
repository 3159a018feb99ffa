// CombCN Inpaint: an OpenFX image effect that fills a matted region of a plate, stably over time.
//
// The plugin holds no inpainting logic: for each render it fetches the frames of the window around
// the render time (temporal clip access), writes them with the matte into shared memory and asks a
// local `combcn serve` process (started on demand) to inpaint the window; the server keeps the
// model loaded and caches the window, so the other frames of the window come from its cache.
// Why out of process: hosts embed their own Python or none, and an engine crash or GPU out-of-memory
// must not take the host down. Protocol: docs/OFX.md.
#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "ofx_abi.h"
#include "serve_client.h"

#define COMBCN_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

constexpr const char* kPluginId = "io.github.combcn.Inpaint";
constexpr const char* kMaskClip = "Mask";
constexpr const char* kReferenceClip = "Reference";
constexpr int kMaxWindowFrames = 1024;  // the most frames one request may carry (combcn/serve/protocol.py)
constexpr const char* kChannels[] = {"Alpha", "Red", "Green", "Blue", "Luminance"};
// New choices go at the end: hosts save a choice parameter by its index.
constexpr const char* kShapers[] = {"acescct", "log", "none", "srgb"};
constexpr const char* kDevices[] = {"auto", "cpu", "cuda"};

OfxHost* g_host = nullptr;
const OfxPropertySuiteV1* g_prop = nullptr;
const OfxImageEffectSuiteV1* g_effect = nullptr;
const OfxParameterSuiteV1* g_param = nullptr;
const OfxMessageSuiteV1* g_message = nullptr;
const OfxMessageSuiteV2* g_message2 = nullptr;  // null when the host has only version 1

// Instances showing a persistent message of ours (cleared by their next good render).
std::mutex g_persistent_mutex;
std::set<OfxImageEffectHandle> g_persistent;

// ---- small helpers -------------------------------------------------------------------------

// Reports a failure: a persistent message on the node where the host has message suite V2 (an
// interactive host then shows one notice, not a dialog per failed frame), else the version 1 call.
void report(OfxImageEffectHandle effect, const char* type, const std::string& text) {
  fprintf(stderr, "CombCN: %s\n", text.c_str());
  if (effect != nullptr && g_message2 != nullptr && g_message2->setPersistentMessage != nullptr) {
    if (g_message2->setPersistentMessage(effect, type, "CombCN", "%s", text.c_str()) == kOfxStatOK) {
      std::lock_guard<std::mutex> lock(g_persistent_mutex);
      g_persistent.insert(effect);
      return;
    }
  }
  if (g_message != nullptr && g_message->message != nullptr)
    g_message->message(effect, type, "CombCN", "%s", text.c_str());
}

// Clears our persistent message after a good render (only if one is shown: no host call per frame).
void clear_report(OfxImageEffectHandle effect) {
  {
    std::lock_guard<std::mutex> lock(g_persistent_mutex);
    if (g_persistent.erase(effect) == 0) return;
  }
  if (g_message2 != nullptr && g_message2->clearPersistentMessage != nullptr)
    g_message2->clearPersistentMessage(effect);
}

OfxStatus fail(OfxImageEffectHandle effect, const std::string& text) {
  report(effect, kOfxMessageError, "CombCN Inpaint: " + text);
  return kOfxStatFailed;
}

OfxPropertySetHandle effect_props(OfxImageEffectHandle effect) {
  OfxPropertySetHandle p = nullptr;
  g_effect->getPropertySet(effect, &p);
  return p;
}

std::string get_string(OfxPropertySetHandle props, const char* name, int index = 0) {
  char* v = nullptr;
  if (props == nullptr || g_prop->propGetString(props, name, index, &v) != kOfxStatOK || v == nullptr) return "";
  return v;
}

int get_int(OfxPropertySetHandle props, const char* name, int fallback, int index = 0) {
  int v = fallback;
  if (props == nullptr || g_prop->propGetInt(props, name, index, &v) != kOfxStatOK) return fallback;
  return v;
}

double get_double(OfxPropertySetHandle props, const char* name, double fallback, int index = 0) {
  double v = fallback;
  if (props == nullptr || g_prop->propGetDouble(props, name, index, &v) != kOfxStatOK) return fallback;
  return v;
}

struct Clip {
  OfxImageClipHandle handle = nullptr;
  OfxPropertySetHandle props = nullptr;
  bool connected = false;
};

Clip get_clip(OfxImageEffectHandle effect, const char* name) {
  Clip c;
  if (g_effect->clipGetHandle(effect, name, &c.handle, &c.props) == kOfxStatOK && c.handle != nullptr)
    c.connected = get_int(c.props, kOfxImageClipPropConnected, 1) != 0;
  return c;
}

bool is_general(OfxImageEffectHandle effect) {
  return get_string(effect_props(effect), kOfxImageEffectPropContext) == kOfxImageEffectContextGeneral;
}

// An image fetched from a clip; released when it goes out of scope (before the action returns).
struct Image {
  OfxPropertySetHandle handle = nullptr;
  const char* data = nullptr;
  OfxRectI bounds{0, 0, 0, 0};
  int row_bytes = 0;
  int components = 0;
  std::string depth;
  std::string premultiplication;  // the image's kOfxImageEffectPropPreMultiplication, "" if unset
  Image() = default;
  Image(const Image&) = delete;
  Image& operator=(const Image&) = delete;
  ~Image() {
    if (handle != nullptr) g_effect->clipReleaseImage(handle);
  }
  bool fetch(OfxImageClipHandle clip, OfxTime time) {
    if (g_effect->clipGetImage(clip, time, nullptr, &handle) != kOfxStatOK || handle == nullptr) {
      handle = nullptr;
      return false;
    }
    void* p = nullptr;
    g_prop->propGetPointer(handle, kOfxImagePropData, 0, &p);
    data = static_cast<const char*>(p);
    int b[4] = {0, 0, 0, 0};
    g_prop->propGetIntN(handle, kOfxImagePropBounds, 4, b);
    bounds = OfxRectI{b[0], b[1], b[2], b[3]};
    row_bytes = get_int(handle, kOfxImagePropRowBytes, 0);
    std::string comp = get_string(handle, kOfxImageEffectPropComponents);
    components = comp == kOfxImageComponentRGBA ? 4 : comp == kOfxImageComponentRGB ? 3
               : comp == kOfxImageComponentAlpha ? 1 : 0;
    depth = get_string(handle, kOfxImageEffectPropPixelDepth);
    premultiplication = get_string(handle, kOfxImageEffectPropPreMultiplication);
    return data != nullptr;
  }
  // Pixel (x, y) in pixel coordinates; y grows upwards from the lower-left (OpenFX convention).
  const float* pixel(int x, int y) const {
    return reinterpret_cast<const float*>(data + static_cast<ptrdiff_t>(y - bounds.y1) * row_bytes +
                                          static_cast<ptrdiff_t>(x - bounds.x1) * components * 4);
  }
  bool contains(int x, int y) const { return x >= bounds.x1 && x < bounds.x2 && y >= bounds.y1 && y < bounds.y2; }
};

struct Params {
  int window = 32;
  int context = 0;
  int channel = 0;
  bool invert = false;
  int expand = 0;
  double feather = 0.0;
  int shaper = 0;
  int device = 0;
  std::string weights;
  bool track = true;
  std::string reference_frames;  // as typed: frame numbers of the Reference clip that are references
  bool reference_wins = false;
};

OfxParamHandle param_handle(OfxImageEffectHandle effect, const char* name) {
  OfxParamSetHandle set = nullptr;
  OfxParamHandle h = nullptr;
  g_effect->getParamSet(effect, &set);
  if (set == nullptr || g_param->paramGetHandle(set, name, &h, nullptr) != kOfxStatOK) return nullptr;
  return h;
}

template <typename T>
void param_value(OfxImageEffectHandle effect, const char* name, OfxTime time, T* out) {
  OfxParamHandle h = param_handle(effect, name);
  if (h != nullptr) g_param->paramGetValueAtTime(h, time, out);
}

Params read_params(OfxImageEffectHandle effect, OfxTime time) {
  Params p;
  int b = 0;
  param_value(effect, "windowLength", time, &p.window);
  param_value(effect, "contextFrames", time, &p.context);
  param_value(effect, "matteChannel", time, &p.channel);
  param_value(effect, "invert", time, &b);
  p.invert = b != 0;
  param_value(effect, "expand", time, &p.expand);
  param_value(effect, "feather", time, &p.feather);
  param_value(effect, "shaper", time, &p.shaper);
  param_value(effect, "device", time, &p.device);
  char* w = nullptr;
  param_value(effect, "weights", time, &w);
  if (w != nullptr) p.weights = w;
  b = 1;
  param_value(effect, "trackCamera", time, &b);
  p.track = b != 0;
  char* r = nullptr;
  param_value(effect, "referenceFrames", time, &r);
  if (r != nullptr) p.reference_frames = r;
  b = 0;
  param_value(effect, "referenceWins", time, &b);
  p.reference_wins = b != 0;
  if (p.window < 1) p.window = 1;
  if (p.context < 0) p.context = 0;
  return p;
}

// The frames sent for `time`: the aligned block of `length` frames holding it (blocks start at the
// clip's first frame, so every frame of a block sends the same frames and the server computes the
// block once), widened by `context` frames each side (so neighbouring blocks see each other), within
// the clip.
void window_for(OfxTime time, const double range[2], int length, int context, int* first, int* last) {
  int lo = static_cast<int>(std::floor(range[0] + 0.5));
  int hi = static_cast<int>(std::floor(range[1] + 0.5));
  int t = static_cast<int>(std::floor(time + 0.5));
  if (hi < lo) hi = lo;
  if (t < lo) t = lo;
  if (t > hi) t = hi;
  int start = lo + ((t - lo) / length) * length;
  *first = std::max(start - context, lo);
  *last = std::min(start + length - 1 + context, hi);
}

void clip_frame_range(const Clip& clip, double range[2]) {
  range[0] = get_double(clip.props, kOfxImageEffectPropFrameRange, 0.0, 0);
  range[1] = get_double(clip.props, kOfxImageEffectPropFrameRange, range[0], 1);
}

// The frame numbers typed into "Reference frames": integers separated by commas or spaces, "" = none;
// sorted, without repeats. Returns "" or an error.
std::string parse_reference_frames(const std::string& text, std::vector<int>* frames) {
  auto separator = [](char c) { return c == ',' || std::isspace(static_cast<unsigned char>(c)) != 0; };
  size_t i = 0;
  while (i < text.size()) {
    if (separator(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !separator(text[end])) ++end;
    const std::string token = text.substr(i, end - i);
    const size_t sign = token[0] == '-' || token[0] == '+' ? 1 : 0;
    if (token.size() == sign || token.size() - sign > 9 ||
        token.find_first_not_of("0123456789", sign) != std::string::npos)
      return "Reference frames: '" + token + "' is not a frame number; give frame numbers separated by commas, "
             "e.g. 1012 or 1012,1040";
    frames->push_back(std::stoi(token));
    i = end;
  }
  std::sort(frames->begin(), frames->end());
  frames->erase(std::unique(frames->begin(), frames->end()), frames->end());
  return "";
}

// What a render sends besides its block (docs/OFX.md, "Reference frames"): the reference frames inside
// the block and the nearest one before and after it, since the engine carries a reference through
// every frame between it and the frames it fills; the window then runs from first to last.
struct ReferencePlan {
  std::vector<int> frames;  // reference frames sent, ascending
  int first = 0;            // the window sent: the block (with its context frames) widened to them
  int last = 0;
  std::string error;        // "" or what the user must fix; nothing is sent then
};

ReferencePlan plan_references(const Params& params, bool connected, const double range[2], int first, int last) {
  ReferencePlan plan;
  plan.first = first;
  plan.last = last;
  std::vector<int> named;
  plan.error = parse_reference_frames(params.reference_frames, &named);
  if (!plan.error.empty()) return plan;
  if (named.empty()) {
    if (connected)
      plan.error = "the Reference clip is connected but Reference frames is empty: name the frame(s) it shows "
                   "clean (e.g. 1012 or 1012,1040), or disconnect it";
    return plan;
  }
  if (!connected) {
    plan.error = "Reference frames names frame " + std::to_string(named[0]) +
                 " but the Reference clip is not connected: connect the frame(s) cleaned by hand to Reference, "
                 "or empty Reference frames";
    return plan;
  }
  const int lo = static_cast<int>(std::floor(range[0] + 0.5));
  const int hi = std::max(static_cast<int>(std::floor(range[1] + 0.5)), lo);
  int before = INT_MIN, after = INT_MAX;
  for (int r : named) {
    if (r < lo || r > hi) {
      plan.error = "Reference frame " + std::to_string(r) + " is outside the Source's frames " +
                   std::to_string(lo) + "-" + std::to_string(hi) +
                   ": a reference is a frame of the plate, cleaned by hand";
      return plan;
    }
    if (r < first) {
      before = r;
    } else if (r <= last) {
      plan.frames.push_back(r);
    } else if (after == INT_MAX) {
      after = r;
    }
  }
  if (before != INT_MIN) {
    plan.frames.insert(plan.frames.begin(), before);
    plan.first = before;
  }
  if (after != INT_MAX) {
    plan.frames.push_back(after);
    plan.last = after;
  }
  if (plan.last - plan.first + 1 > kMaxWindowFrames) {
    const int far = plan.last - last > first - plan.first ? plan.last : plan.first;
    plan.error = "Reference frame " + std::to_string(far) + " is too far from frames " + std::to_string(first) +
                 "-" + std::to_string(last) +
                 ": the frames from a reference to the ones it fills travel together, at most " +
                 std::to_string(kMaxWindowFrames) + "; name a reference nearer these frames";
  }
  return plan;
}

// The reference plan of a render at `time` (errors included), from the node's state.
ReferencePlan reference_plan(OfxImageEffectHandle effect, const Params& params, const double range[2], int first,
                             int last, bool general) {
  const bool connected = general && get_clip(effect, kReferenceClip).connected;
  return plan_references(params, connected, range, first, last);
}

// ---- describe --------------------------------------------------------------------------------

OfxStatus describe(OfxImageEffectHandle effect) {
  OfxPropertySetHandle p = effect_props(effect);
  g_prop->propSetString(p, kOfxPropLabel, 0, "CombCN Inpaint");
  g_prop->propSetString(p, kOfxImageEffectPluginPropGrouping, 0, "CombCN");
  g_prop->propSetString(p, kOfxPropPluginDescription, 0,
                        "Removes what the Mask covers and fills it, stable across frames (3DCN + CombCN, "
                        "Wang et al. AAAI 2019). Runs in a local 'combcn serve' process.");
  g_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 0, kOfxImageEffectContextGeneral);
  g_prop->propSetString(p, kOfxImageEffectPropSupportedContexts, 1, kOfxImageEffectContextFilter);
  g_prop->propSetString(p, kOfxImageEffectPropSupportedPixelDepths, 0, kOfxBitDepthFloat);
  g_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0);  // the network needs whole frames
  g_prop->propSetInt(p, kOfxImageEffectPropSupportsMultiResolution, 0, 0);
  g_prop->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 1);
  // Fully safe: each render has its own connection and shared buffer; only start-up takes a mutex.
  g_prop->propSetString(p, kOfxImageEffectPluginRenderThreadSafety, 0, kOfxImageEffectRenderFullySafe);
  g_prop->propSetInt(p, kOfxImageEffectPluginPropHostFrameThreading, 0, 0);
  return kOfxStatOK;
}

void define_choice(OfxParamSetHandle set, const char* name, const char* label, const char* hint,
                   const char* const* options, int n, int def) {
  OfxPropertySetHandle p = nullptr;
  g_param->paramDefine(set, kOfxParamTypeChoice, name, &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, label);
  g_prop->propSetString(p, kOfxParamPropHint, 0, hint);
  for (int i = 0; i < n; ++i) g_prop->propSetString(p, kOfxParamPropChoiceOption, i, options[i]);
  g_prop->propSetInt(p, kOfxParamPropDefault, 0, def);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
}

OfxStatus describe_in_context(OfxImageEffectHandle effect, OfxPropertySetHandle in_args) {
  std::string context = get_string(in_args, kOfxImageEffectPropContext);
  OfxPropertySetHandle p = nullptr;
  g_effect->clipDefine(effect, kOfxImageEffectSimpleSourceClipName, &p);
  g_prop->propSetString(p, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
  g_prop->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 1);
  g_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0);
  if (context == kOfxImageEffectContextGeneral) {
    g_effect->clipDefine(effect, kMaskClip, &p);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentAlpha);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedComponents, 1, kOfxImageComponentRGBA);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedComponents, 2, kOfxImageComponentRGB);
    g_prop->propSetInt(p, kOfxImageClipPropOptional, 0, 1);
    g_prop->propSetInt(p, kOfxImageClipPropIsMask, 0, 1);
    g_prop->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 1);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0);
    // Frames of the plate cleaned by hand (or a clean plate): which ones, the Reference frames parameter says.
    g_effect->clipDefine(effect, kReferenceClip, &p);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
    g_prop->propSetString(p, kOfxImageEffectPropSupportedComponents, 1, kOfxImageComponentRGB);
    g_prop->propSetInt(p, kOfxImageClipPropOptional, 0, 1);
    g_prop->propSetInt(p, kOfxImageEffectPropTemporalClipAccess, 0, 1);
    g_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0);
  }
  g_effect->clipDefine(effect, kOfxImageEffectOutputClipName, &p);
  g_prop->propSetString(p, kOfxImageEffectPropSupportedComponents, 0, kOfxImageComponentRGBA);
  g_prop->propSetInt(p, kOfxImageEffectPropSupportsTiles, 0, 0);

  OfxParamSetHandle set = nullptr;
  g_effect->getParamSet(effect, &set);
  // Parameters do not animate: a window is inpainted as a whole with one set of values.
  g_param->paramDefine(set, kOfxParamTypeInteger, "windowLength", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Window (frames)");
  g_prop->propSetString(p, kOfxParamPropHint, 0,
                        "Frames inpainted together (aligned blocks from the clip's first frame); the "
                        "network was trained on 32 (paper section 2).");
  g_prop->propSetInt(p, kOfxParamPropDefault, 0, 32);
  g_prop->propSetInt(p, kOfxParamPropMin, 0, 1);
  g_prop->propSetInt(p, kOfxParamPropMax, 0, 256);
  g_prop->propSetInt(p, kOfxParamPropDisplayMin, 0, 1);
  g_prop->propSetInt(p, kOfxParamPropDisplayMax, 0, 64);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);

  g_param->paramDefine(set, kOfxParamTypeInteger, "contextFrames", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Context (frames)");
  g_prop->propSetString(p, kOfxParamPropHint, 0,
                        "Extra frames on each side of a window that the fill may look at but that belong "
                        "to the neighbouring windows; raise it to smooth window boundaries (costs time).");
  g_prop->propSetInt(p, kOfxParamPropDefault, 0, 0);
  g_prop->propSetInt(p, kOfxParamPropMin, 0, 0);
  g_prop->propSetInt(p, kOfxParamPropMax, 0, 64);
  g_prop->propSetInt(p, kOfxParamPropDisplayMin, 0, 0);
  g_prop->propSetInt(p, kOfxParamPropDisplayMax, 0, 16);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);

  define_choice(set, "matteChannel", "Matte channel",
                context == kOfxImageEffectContextGeneral
                    ? "Channel of the Mask clip that marks what to remove (1 = remove)."
                    : "Channel of the Source that marks what to remove (1 = remove); the filter context has "
                      "no Mask clip.",
                kChannels, 5, 0);

  g_param->paramDefine(set, kOfxParamTypeBoolean, "invert", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Invert matte");
  g_prop->propSetString(p, kOfxParamPropHint, 0, "Remove where the matte is 0 instead of 1.");
  g_prop->propSetInt(p, kOfxParamPropDefault, 0, 0);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);

  g_param->paramDefine(set, kOfxParamTypeInteger, "expand", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Expand (px)");
  g_prop->propSetString(p, kOfxParamPropHint, 0, "Grow the matte by this many pixels before filling.");
  g_prop->propSetInt(p, kOfxParamPropDefault, 0, 0);
  g_prop->propSetInt(p, kOfxParamPropMin, 0, 0);
  g_prop->propSetInt(p, kOfxParamPropMax, 0, 512);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);

  g_param->paramDefine(set, kOfxParamTypeDouble, "feather", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Feather (px)");
  g_prop->propSetString(p, kOfxParamPropHint, 0, "Soften the edge where the fill meets the plate.");
  g_prop->propSetDouble(p, kOfxParamPropDefault, 0, 0.0);
  g_prop->propSetDouble(p, kOfxParamPropMin, 0, 0.0);
  g_prop->propSetDouble(p, kOfxParamPropMax, 0, 512.0);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);

  define_choice(set, "shaper", "Shaper",
                "How scene-linear values are mapped into the network's [0, 1] range and back.", kShapers, 4, 0);
  define_choice(set, "device", "Device", "Where the server runs the network: auto picks CUDA when present.",
                kDevices, 3, 0);

  g_param->paramDefine(set, kOfxParamTypeString, "weights", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Weights file");
  g_prop->propSetString(p, kOfxParamPropHint, 0, "A .pt weights file; empty = the shipped default weights.");
  g_prop->propSetString(p, kOfxParamPropStringMode, 0, kOfxParamStringIsFilePath);
  g_prop->propSetInt(p, kOfxParamPropStringFilePathExists, 0, 1);
  g_prop->propSetString(p, kOfxParamPropDefault, 0, "");
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);

  g_param->paramDefine(set, kOfxParamTypeBoolean, "trackCamera", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Track camera");
  g_prop->propSetString(p, kOfxParamPropHint, 0,
                        "Build the clean plate through a track of the camera (as the weights say); off = the "
                        "locked-off plate, for a shot where the track goes wrong.");
  g_prop->propSetInt(p, kOfxParamPropDefault, 0, 1);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
  if (context != kOfxImageEffectContextGeneral) return kOfxStatOK;  // the filter context has no Reference clip

  g_param->paramDefine(set, kOfxParamTypeString, "referenceFrames", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Reference frames");
  g_prop->propSetString(p, kOfxParamPropHint, 0,
                        "Frames at which the Reference clip shows the plate cleaned by hand (e.g. 1012 or "
                        "1012,1040); the fill carries them along the motion through the shot. Empty = none.");
  g_prop->propSetString(p, kOfxParamPropDefault, 0, "");
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);

  g_param->paramDefine(set, kOfxParamTypeBoolean, "referenceWins", &p);
  g_prop->propSetString(p, kOfxPropLabel, 0, "Reference wins");
  g_prop->propSetString(p, kOfxParamPropHint, 0,
                        "Where a reference reaches, use it even where a frame nearer in time shows the background "
                        "itself (off: the nearer frame wins).");
  g_prop->propSetInt(p, kOfxParamPropDefault, 0, 0);
  g_prop->propSetInt(p, kOfxParamPropAnimates, 0, 0);
  return kOfxStatOK;
}

// ---- instance actions ------------------------------------------------------------------------

OfxStatus get_frames_needed(OfxImageEffectHandle effect, OfxPropertySetHandle in_args,
                            OfxPropertySetHandle out_args) {
  OfxTime time = get_double(in_args, kOfxPropTime, 0.0);
  Clip source = get_clip(effect, kOfxImageEffectSimpleSourceClipName);
  double range[2];
  clip_frame_range(source, range);
  Params params = read_params(effect, time);
  int first = 0, last = 0;
  window_for(time, range, params.window, params.context, &first, &last);
  const bool general = is_general(effect);
  // With references named wrongly the render reports it; meanwhile the block alone is needed.
  ReferencePlan plan = reference_plan(effect, params, range, first, last, general);
  if (!plan.error.empty()) plan = ReferencePlan{{}, first, last, ""};
  double frames[2] = {static_cast<double>(plan.first), static_cast<double>(plan.last)};
  g_prop->propSetDoubleN(out_args, "OfxImageClipPropFrameRange_Source", 2, frames);
  if (general && get_clip(effect, kMaskClip).connected)
    g_prop->propSetDoubleN(out_args, "OfxImageClipPropFrameRange_Mask", 2, frames);
  if (!plan.frames.empty()) {
    std::vector<double> ranges;  // one (frame, frame) pair per reference frame
    for (int r : plan.frames) ranges.insert(ranges.end(), {static_cast<double>(r), static_cast<double>(r)});
    g_prop->propSetDoubleN(out_args, "OfxImageClipPropFrameRange_Reference", static_cast<int>(ranges.size()),
                           ranges.data());
  }
  return kOfxStatOK;
}

OfxStatus get_regions_of_interest(OfxImageEffectHandle effect, OfxPropertySetHandle in_args,
                                  OfxPropertySetHandle out_args) {
  // The fill needs context from the whole frame, whatever part is rendered.
  OfxTime time = get_double(in_args, kOfxPropTime, 0.0);
  Clip source = get_clip(effect, kOfxImageEffectSimpleSourceClipName);
  OfxRectD rod{0, 0, 0, 0};
  if (g_effect->clipGetRegionOfDefinition(source.handle, time, &rod) != kOfxStatOK) return kOfxStatReplyDefault;
  double roi[4] = {rod.x1, rod.y1, rod.x2, rod.y2};
  g_prop->propSetDoubleN(out_args, "OfxImageClipPropRoI_Source", 4, roi);
  if (is_general(effect) && get_clip(effect, kMaskClip).connected)
    g_prop->propSetDoubleN(out_args, "OfxImageClipPropRoI_Mask", 4, roi);
  if (is_general(effect) && get_clip(effect, kReferenceClip).connected)
    g_prop->propSetDoubleN(out_args, "OfxImageClipPropRoI_Reference", 4, roi);
  return kOfxStatOK;
}

OfxStatus get_clip_preferences(OfxImageEffectHandle effect, OfxPropertySetHandle out_args) {
  g_prop->propSetString(out_args, "OfxImageClipPropComponents_Output", 0, kOfxImageComponentRGBA);
  g_prop->propSetString(out_args, "OfxImageClipPropDepth_Output", 0, kOfxBitDepthFloat);
  g_prop->propSetString(out_args, "OfxImageClipPropComponents_Source", 0, kOfxImageComponentRGBA);
  g_prop->propSetString(out_args, "OfxImageClipPropDepth_Source", 0, kOfxBitDepthFloat);
  if (is_general(effect)) {
    g_prop->propSetString(out_args, "OfxImageClipPropDepth_Mask", 0, kOfxBitDepthFloat);
    g_prop->propSetString(out_args, "OfxImageClipPropDepth_Reference", 0, kOfxBitDepthFloat);
  }
  return kOfxStatOK;
}

OfxStatus is_identity(OfxImageEffectHandle effect, OfxPropertySetHandle in_args, OfxPropertySetHandle out_args) {
  // Nothing to remove without a Mask in the general context: pass the Source through.
  if (is_general(effect) && !get_clip(effect, kMaskClip).connected) {
    g_prop->propSetString(out_args, kOfxPropName, 0, kOfxImageEffectSimpleSourceClipName);
    g_prop->propSetDouble(out_args, kOfxPropTime, 0, get_double(in_args, kOfxPropTime, 0.0));
    return kOfxStatOK;
  }
  return kOfxStatReplyDefault;
}

// Matte value of one pixel of a mask (or source) image, 1 = remove.
float matte_value(const float* px, int components, int channel) {
  if (components == 1) return px[0];
  switch (channel) {
    case 1: return px[0];
    case 2: return px[1];
    case 3: return px[2];
    case 4: return 0.2126f * px[0] + 0.7152f * px[1] + 0.0722f * px[2];  // Rec.709 luminance
    default: return components == 4 ? px[3] : 0.2126f * px[0] + 0.7152f * px[1] + 0.0722f * px[2];
  }
}

bool is_premultiplied(const std::string& state) {
  // The specification's value, and the spelling some hosts and headers use.
  return state == kOfxImagePreMultiplied || state == "OfxImagePreMultiplied";
}

// Whether `img` (of `clip`) holds premultiplied colour: the image's own property, else the clip's.
bool premultiplied(const Image& img, const Clip& clip) {
  return is_premultiplied(img.premultiplication.empty()
                              ? get_string(clip.props, kOfxImageEffectPropPreMultiplication)
                              : img.premultiplication);
}

// One frame as the server sees it: RGBA top-down in `fr` [H, W, 4] and the matte in `mt` [H, W].
// `mask` is the Mask image at this time (general context; null = no image there: remove nothing).
// Premultiplied colour is divided by alpha where alpha is not 0 (the network fills straight colour);
// the matte is read before that, from the pixels as the host gave them. Returns "" or an error.
std::string load_frame(const Image& img, const Image* mask, bool general, bool premult, const Params& params,
                       const OfxRectI& frame, float* fr, float* mt) {
  const int W = frame.x2 - frame.x1, H = frame.y2 - frame.y1;
  const size_t plane = static_cast<size_t>(W) * H;
  for (int r = 0; r < H; ++r) {
    const int y = frame.y2 - 1 - r;  // top-down rows for the network
    for (int x = frame.x1; x < frame.x2; ++x) {
      float* d = fr + (static_cast<size_t>(r) * W + (x - frame.x1)) * 4;
      if (img.contains(x, y)) {
        memcpy(d, img.pixel(x, y), 16);
      } else {
        d[0] = d[1] = d[2] = d[3] = 0.0f;
      }
      if (!general) mt[static_cast<size_t>(r) * W + (x - frame.x1)] = matte_value(d, 4, params.channel);
    }
  }
  if (general) {
    if (mask == nullptr) {
      memset(mt, 0, plane * sizeof(float));  // no mask image at this frame: nothing to remove there
    } else {
      if (mask->depth != kOfxBitDepthFloat || mask->components == 0)
        return "the Mask must be float (Alpha, RGB or RGBA)";
      if (mask->components == 3 && params.channel == 0)
        return "the Mask clip has no alpha: set Matte channel to Red, Green, Blue or Luminance";
      for (int r = 0; r < H; ++r) {
        const int y = frame.y2 - 1 - r;
        for (int x = frame.x1; x < frame.x2; ++x)
          mt[static_cast<size_t>(r) * W + (x - frame.x1)] =
              mask->contains(x, y) ? matte_value(mask->pixel(x, y), mask->components, params.channel) : 0.0f;
      }
    }
  }
  if (params.invert)
    for (size_t i = 0; i < plane; ++i) mt[i] = 1.0f - mt[i];
  if (premult) {
    for (size_t i = 0; i < plane; ++i) {
      float* d = fr + i * 4;
      if (d[3] != 0.0f) {
        d[0] /= d[3];
        d[1] /= d[3];
        d[2] /= d[3];
      }
    }
  }
  return "";
}

std::string rect_text(const OfxRectI& r) {
  return std::to_string(r.x2 - r.x1) + "x" + std::to_string(r.y2 - r.y1) + " at (" + std::to_string(r.x1) + ", " +
         std::to_string(r.y1) + ")";
}

// One reference frame as the server sees it: RGB top-down in `rgb` [H, W, 3] over the Source's frame
// rectangle. A larger Reference is cropped to it (its pixel coordinates are the Source's); one that does
// not cover it is refused, since a reference is the plate's frame cleaned by hand. Premultiplied colour
// is divided by alpha where alpha is not 0, as the Source's is. Returns "" or an error.
std::string load_reference(const Clip& clip, int time, const OfxRectI& frame, float* rgb) {
  Image img;
  const std::string at = " at frame " + std::to_string(time);
  if (!img.fetch(clip.handle, time))
    return "the Reference clip has no image" + at + ", a frame named in Reference frames";
  if (img.depth != kOfxBitDepthFloat || (img.components != 3 && img.components != 4))
    return "the Reference must be 32-bit float RGB or RGBA (got " + img.depth + ")" + at;
  const OfxRectI& b = img.bounds;
  if (b.x1 > frame.x1 || b.y1 > frame.y1 || b.x2 < frame.x2 || b.y2 < frame.y2)
    return "the Reference image" + at + " is " + rect_text(b) + ", the Source's frame is " + rect_text(frame) +
           ": give the Reference in the Source's format";
  const bool premult = img.components == 4 && premultiplied(img, clip);
  const int W = frame.x2 - frame.x1, H = frame.y2 - frame.y1;
  for (int r = 0; r < H; ++r) {
    const int y = frame.y2 - 1 - r;  // top-down rows, as the frames
    for (int x = frame.x1; x < frame.x2; ++x) {
      const float* px = img.pixel(x, y);
      float* d = rgb + (static_cast<size_t>(r) * W + (x - frame.x1)) * 3;
      const float k = premult && px[3] != 0.0f ? px[3] : 1.0f;
      d[0] = px[0] / k;
      d[1] = px[1] / k;
      d[2] = px[2] / k;
    }
  }
  return "";
}

// What identifies a window's inputs without fetching them (docs/OFX.md, "Window cache"): the
// instance, the window's frame span and the clip's range, the frame size, every parameter, the
// premultiplication state and the reference frames with a hash of each as sent (they are fetched for
// every render). The frames' pixels enter through per-frame ids (frame_id).
uint64_t window_slot(OfxImageEffectHandle effect, const Params& p, int first, int last, const double range[2],
                     const OfxRectI& frame, bool general, bool premult, const std::vector<int>& references,
                     const std::vector<std::string>& reference_ids) {
  char text[512];
  snprintf(text, sizeof(text), "%p|%d|%d|%.17g|%.17g|%d,%d,%d,%d|%d|%d|%d|%d|%d|%d|%.17g|%d|%d|%d|%d|%d|",
           static_cast<void*>(effect), first, last, range[0], range[1], frame.x1, frame.y1, frame.x2, frame.y2,
           p.window, p.context, p.channel, p.invert ? 1 : 0, p.expand, p.shaper, p.feather, p.device,
           p.track ? 1 : 0, general ? 1 : 0, premult ? 1 : 0, static_cast<int>(p.weights.size()));
  std::string key = std::string(text) + p.weights + "|references" + (p.reference_wins ? "(wins)" : "");
  for (size_t k = 0; k < references.size(); ++k)
    key += "|" + std::to_string(references[k]) + ":" + reference_ids[k];
  return combcn::content_hash(key.data(), key.size(), 0x636f6d62636e0001ull);
}

// Id of one frame's inputs as sent: hash of its RGBA and matte planes.
uint64_t frame_id(const float* fr, const float* mt, size_t plane) {
  return combcn::content_hash(mt, plane * sizeof(float), combcn::content_hash(fr, plane * 16, 0));
}

// `references`: the request carries references, so reference_wins goes too (only then: a server
// that predates references refuses params it does not know).
std::string fill_params_json(const Params& params, bool references) {
  std::string req = "\"params\":{\"expand\":" + std::to_string(params.expand);
  char feather[64];
  snprintf(feather, sizeof(feather), "%.17g", params.feather);
  req += ",\"feather\":" + std::string(feather);
  req += ",\"shaper\":" + combcn::json_quote(kShapers[std::min(std::max(params.shaper, 0), 3)]);
  req += ",\"device\":" + combcn::json_quote(kDevices[std::min(std::max(params.device, 0), 2)]);
  req += ",\"weights\":" + combcn::json_quote(params.weights);
  req += std::string(",\"track\":") + (params.track ? "true" : "false");
  if (references) req += std::string(",\"reference_wins\":") + (params.reference_wins ? "true" : "false");
  return req + "}";
}

std::string geometry_json(int T, int H, int W, int want, size_t out_offset_floats) {
  return "\"frames\":" + std::to_string(T) + ",\"height\":" + std::to_string(H) + ",\"width\":" +
         std::to_string(W) + ",\"channels\":4,\"want\":[" + std::to_string(want) + "],\"out_offset\":" +
         std::to_string(out_offset_floats * sizeof(float));
}

OfxStatus render_frame(OfxImageEffectHandle effect, OfxPropertySetHandle in_args) {
  OfxTime time = get_double(in_args, kOfxPropTime, 0.0);
  const int now = static_cast<int>(std::floor(time + 0.5));
  int rw[4] = {0, 0, 0, 0};
  g_prop->propGetIntN(in_args, kOfxImageEffectPropRenderWindow, 4, rw);
  Params params = read_params(effect, time);
  const bool general = is_general(effect);
  Clip source = get_clip(effect, kOfxImageEffectSimpleSourceClipName);
  Clip output = get_clip(effect, kOfxImageEffectOutputClipName);
  Clip mask = general ? get_clip(effect, kMaskClip) : Clip{};
  auto aborted = [effect]() { return g_effect->abort != nullptr && g_effect->abort(effect) != 0; };

  Image out;
  if (!out.fetch(output.handle, time)) return fail(effect, "the host gave no output image");
  Image src;
  if (!src.fetch(source.handle, time)) return fail(effect, "no Source image at frame " + std::to_string(now));
  if (src.depth != kOfxBitDepthFloat || out.depth != kOfxBitDepthFloat)
    return fail(effect, "only 32-bit float images are supported (got " + src.depth + "); convert upstream");
  if (src.components != 4 || out.components != 4) return fail(effect, "the Source and Output must be RGBA");

  const OfxRectI frame = src.bounds;  // the frame rectangle the network sees
  const int W = frame.x2 - frame.x1, H = frame.y2 - frame.y1;
  if (W <= 0 || H <= 0 || (general && !mask.connected)) {
    for (int y = std::max(rw[1], out.bounds.y1); y < std::min(rw[3], out.bounds.y2); ++y)
      for (int x = std::max(rw[0], out.bounds.x1); x < std::min(rw[2], out.bounds.x2); ++x) {
        float* o = const_cast<float*>(out.pixel(x, y));
        if (src.contains(x, y)) {
          memcpy(o, src.pixel(x, y), 16);
        } else {
          o[0] = o[1] = o[2] = o[3] = 0.0f;
        }
      }
    return kOfxStatOK;
  }
  if (aborted()) return kOfxStatFailed;

  // The current frame as sent (the host gives it to us anyway): its id keys the window cache.
  const size_t plane = static_cast<size_t>(W) * H;
  const bool premult = premultiplied(src, source);
  std::vector<float> cur_rgba(plane * 4), cur_matte(plane);
  {
    Image m;
    const bool have_mask = general && m.fetch(mask.handle, time);
    std::string e = load_frame(src, have_mask ? &m : nullptr, general, premult, params, frame, cur_rgba.data(),
                               cur_matte.data());
    if (!e.empty()) return fail(effect, e);
  }
  double range[2];
  clip_frame_range(source, range);
  int first = 0, last = 0;
  window_for(time, range, params.window, params.context, &first, &last);
  // Reference frames: checked and fetched before anything is sent (their hashes key the window too).
  const ReferencePlan plan = reference_plan(effect, params, range, first, last, general);
  if (!plan.error.empty()) return fail(effect, plan.error);
  const Clip reference = plan.frames.empty() ? Clip{} : get_clip(effect, kReferenceClip);
  const size_t n_refs = plan.frames.size();
  std::vector<float> ref_rgb(n_refs * plane * 3);
  std::vector<std::string> ref_ids;
  for (size_t k = 0; k < n_refs; ++k) {
    if (aborted()) return kOfxStatFailed;
    float* rgb = ref_rgb.data() + k * plane * 3;
    std::string e = load_reference(reference, plan.frames[k], frame, rgb);
    if (!e.empty()) return fail(effect, e);
    ref_ids.push_back(combcn::hex64(combcn::content_hash(rgb, plane * 3 * sizeof(float), 0)));
  }
  first = plan.first;
  last = plan.last;
  const std::string slot = combcn::hex64(
      window_slot(effect, params, first, last, range, frame, general, premult, plan.frames, ref_ids));
  const std::string cur_id = combcn::hex64(frame_id(cur_rgba.data(), cur_matte.data(), plane));
  if (aborted()) return kOfxStatFailed;

  // Ask the server first: if it holds this window with this very frame, only the frame is sent.
  combcn::SharedBuffer shm;
  std::string err;
  combcn::Reply reply;
  const float* result = nullptr;  // out [1, H, W, 4] in shm once the server answered
  const float* sent = nullptr;    // the current frame as sent [H, W, 4]
  if (!shm.create(plane * 9 * sizeof(float), &err)) return fail(effect, err);
  memcpy(shm.data(), cur_rgba.data(), plane * 16);
  memcpy(shm.data() + plane * 4, cur_matte.data(), plane * sizeof(float));
  std::string ask = "{\"v\":1,\"op\":\"lookup\"," + geometry_json(1, H, W, 0, plane * 5) + ",\"slot\":\"" + slot +
                    "\",\"time\":" + std::to_string(now) + ",\"frame_id\":\"" + cur_id + "\"}";
  bool asked = false;
  for (int attempt = 0; attempt < 2 && !asked; ++attempt) {
    bool connected = false;
    reply.clear();
    if (combcn::call_server(ask, &shm, &reply, &err, aborted, &connected)) {
      asked = true;
      if (reply["hit"] == "true") {
        result = shm.data() + plane * 5;
        sent = shm.data();
      }
    } else if (reply.count("ok") != 0) {
      asked = true;  // a server without lookups (an older combcn) refused it: fetch the window as before
    } else if (aborted()) {
      return kOfxStatFailed;
    } else if (!connected || attempt == 1) {
      return fail(effect, err);  // the server could not be reached or started
    }
    // else: the connection broke before the answer (a server dying as we connected): ask once more,
    // which starts a new server if needed; a lookup is cheap and changes nothing on the server
  }

  combcn::SharedBuffer window;
  if (result == nullptr) {
    const int T_max = last - first + 1;
    // Layout (float32, top-down rows): frames [T,H,W,4] | matte [T,H,W] | references [R,H,W,3] | out [1,H,W,4].
    if (!window.create((static_cast<size_t>(T_max) * plane * 5 + n_refs * plane * 3 + plane * 4) * sizeof(float),
                       &err))
      return fail(effect, err);
    float* frames = window.data();
    float* matte = frames + static_cast<size_t>(T_max) * plane * 4;
    std::vector<int> times;
    std::vector<std::string> ids;
    int want = -1;
    for (int f = first; f <= last; ++f) {
      if (aborted()) return kOfxStatFailed;
      const int t = static_cast<int>(times.size());
      float* fr = frames + static_cast<size_t>(t) * plane * 4;
      float* mt = matte + static_cast<size_t>(t) * plane;
      if (f == now) {
        want = t;
        memcpy(fr, cur_rgba.data(), plane * 16);
        memcpy(mt, cur_matte.data(), plane * sizeof(float));
        ids.push_back(cur_id);
      } else {
        // A frame missing from the clip is left out of the window (the spec says: treat as absent).
        Image other;
        if (!other.fetch(source.handle, f)) {
          if (std::binary_search(plan.frames.begin(), plan.frames.end(), f))
            return fail(effect, "the Source has no image at reference frame " + std::to_string(f) +
                                    ": a reference is placed on its frame of the plate");
          continue;
        }
        if (other.depth != kOfxBitDepthFloat || other.components != 4)
          return fail(effect, "Source frame " + std::to_string(f) + " is not float RGBA");
        Image m;
        const bool have_mask = general && m.fetch(mask.handle, f);
        std::string e = load_frame(other, have_mask ? &m : nullptr, general, premultiplied(other, source), params,
                                   frame, fr, mt);
        if (!e.empty()) return fail(effect, e);
        ids.push_back(combcn::hex64(frame_id(fr, mt, plane)));
      }
      times.push_back(f);
    }
    if (want < 0) return fail(effect, "internal error: the render time is outside its own window");
    const int T = static_cast<int>(times.size());
    if (T < T_max) {
      // Close the gap left by missing frames so the layout is dense: move the mattes down.
      memmove(frames + static_cast<size_t>(T) * plane * 4, matte, static_cast<size_t>(T) * plane * sizeof(float));
    }
    std::string ref_indices;  // the references' indices into the window, in the order stored
    for (size_t k = 0; k < n_refs; ++k) {
      const int index = static_cast<int>(std::find(times.begin(), times.end(), plan.frames[k]) - times.begin());
      ref_indices += (k ? "," : "") + std::to_string(index);
    }
    if (n_refs > 0)
      memcpy(frames + static_cast<size_t>(T) * plane * 5, ref_rgb.data(), n_refs * plane * 3 * sizeof(float));
    const size_t out_offset = static_cast<size_t>(T) * plane * 5 + n_refs * plane * 3;
    std::string req = "{\"v\":1,\"op\":\"inpaint\"," + geometry_json(T, H, W, want, out_offset) + ",\"times\":[";
    for (int i = 0; i < T; ++i) req += (i ? "," : "") + std::to_string(times[i]);
    req += "],\"slot\":\"" + slot + "\",\"frame_ids\":[";
    for (int i = 0; i < T; ++i) req += std::string(i ? "," : "") + "\"" + ids[i] + "\"";
    req += "],";
    if (n_refs > 0) req += "\"references\":[" + ref_indices + "],";
    req += fill_params_json(params, n_refs > 0) + "}";
    reply.clear();
    if (!combcn::call_server(req, &window, &reply, &err, aborted)) {
      if (aborted()) return kOfxStatFailed;
      return fail(effect, err);
    }
    result = frames + out_offset;
    sent = frames + static_cast<size_t>(want) * plane * 4;
  }

  for (int y = std::max(rw[1], out.bounds.y1); y < std::min(rw[3], out.bounds.y2); ++y)
    for (int x = std::max(rw[0], out.bounds.x1); x < std::min(rw[2], out.bounds.x2); ++x) {
      float* o = const_cast<float*>(out.pixel(x, y));
      if (x < frame.x1 || x >= frame.x2 || y < frame.y1 || y >= frame.y2) {
        o[0] = o[1] = o[2] = o[3] = 0.0f;
        continue;
      }
      const size_t i = static_cast<size_t>(frame.y2 - 1 - y) * W + (x - frame.x1);
      const float* res = result + i * 4;
      if (!premult) {
        memcpy(o, res, 16);
      } else if (memcmp(res, sent + i * 4, 12) == 0) {
        memcpy(o, src.pixel(x, y), 16);  // not filled: the Source's pixel bit for bit (no divide/multiply trip)
      } else {
        const float a = res[3];  // alpha is never inpainted
        const float k = a != 0.0f ? a : 1.0f;  // alpha 0 was sent as is: give it back as is
        o[0] = res[0] * k;
        o[1] = res[1] * k;
        o[2] = res[2] * k;
        o[3] = a;
      }
    }
  return kOfxStatOK;
}

OfxStatus render(OfxImageEffectHandle effect, OfxPropertySetHandle in_args) {
  const OfxStatus status = render_frame(effect, in_args);
  if (status == kOfxStatOK) clear_report(effect);
  return status;
}

OfxStatus load() {
  if (g_host == nullptr || g_host->fetchSuite == nullptr) return kOfxStatErrMissingHostFeature;
  g_prop = static_cast<const OfxPropertySuiteV1*>(g_host->fetchSuite(g_host->host, kOfxPropertySuite, 1));
  g_effect = static_cast<const OfxImageEffectSuiteV1*>(g_host->fetchSuite(g_host->host, kOfxImageEffectSuite, 1));
  g_param = static_cast<const OfxParameterSuiteV1*>(g_host->fetchSuite(g_host->host, kOfxParameterSuite, 1));
  g_message = static_cast<const OfxMessageSuiteV1*>(g_host->fetchSuite(g_host->host, kOfxMessageSuite, 1));
  g_message2 = static_cast<const OfxMessageSuiteV2*>(g_host->fetchSuite(g_host->host, kOfxMessageSuite, 2));
  if (g_prop == nullptr || g_effect == nullptr || g_param == nullptr) return kOfxStatErrMissingHostFeature;
  return kOfxStatOK;
}

OfxStatus main_entry(const char* action, const void* handle, OfxPropertySetHandle in_args,
                     OfxPropertySetHandle out_args) {
  auto effect = static_cast<OfxImageEffectHandle>(const_cast<void*>(handle));
  try {
    const std::string a = action ? action : "";
    if (a == kOfxActionLoad) return load();
    if (g_prop == nullptr) return kOfxStatErrFatal;
    if (a == kOfxActionDescribe) return describe(effect);
    if (a == kOfxImageEffectActionDescribeInContext) return describe_in_context(effect, in_args);
    if (a == kOfxActionDestroyInstance) {
      std::lock_guard<std::mutex> lock(g_persistent_mutex);
      g_persistent.erase(effect);  // the handle may be reused by a later instance
      return kOfxStatOK;
    }
    if (a == kOfxActionCreateInstance || a == kOfxActionUnload) return kOfxStatOK;
    if (a == kOfxImageEffectActionGetFramesNeeded) return get_frames_needed(effect, in_args, out_args);
    if (a == kOfxImageEffectActionGetRegionsOfInterest) return get_regions_of_interest(effect, in_args, out_args);
    if (a == kOfxImageEffectActionGetClipPreferences) return get_clip_preferences(effect, out_args);
    if (a == kOfxImageEffectActionIsIdentity) return is_identity(effect, in_args, out_args);
    if (a == kOfxImageEffectActionRender) return render(effect, in_args);
    return kOfxStatReplyDefault;
  } catch (const std::bad_alloc&) {
    report(effect, kOfxMessageError, "CombCN Inpaint: out of memory");
    return kOfxStatErrMemory;
  } catch (const std::exception& e) {
    report(effect, kOfxMessageError, std::string("CombCN Inpaint: internal error: ") + e.what());
    return kOfxStatFailed;
  } catch (...) {
    report(effect, kOfxMessageError, "CombCN Inpaint: internal error");
    return kOfxStatFailed;
  }
}

void set_host(OfxHost* host) { g_host = host; }

OfxPlugin g_plugin = {kOfxImageEffectPluginApi, 1, kPluginId, 0, 1, set_host, main_entry};

}  // namespace

COMBCN_EXPORT int OfxGetNumberOfPlugins(void) { return 1; }

COMBCN_EXPORT OfxPlugin* OfxGetPlugin(int nth) { return nth == 0 ? &g_plugin : nullptr; }
