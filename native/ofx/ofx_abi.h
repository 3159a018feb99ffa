// Minimal OpenFX 1.x ABI declarations for the CombCN plugin, written for this project from the facts
// of the OpenFX specification (docs/research/integration.md section 1): only what the plugin uses.
// Struct layouts (field order and types) must match the specification exactly: hosts pass these
// structs across the C ABI. String values are the specification's property/action names.
#pragma once

#include <cstddef>

extern "C" {

typedef int OfxStatus;
typedef double OfxTime;

// Opaque handles: the host owns what they point at.
typedef struct OfxPropertySetStruct* OfxPropertySetHandle;
typedef struct OfxImageEffectStruct* OfxImageEffectHandle;
typedef struct OfxImageClipStruct* OfxImageClipHandle;
typedef struct OfxParamStruct* OfxParamHandle;
typedef struct OfxParamSetStruct* OfxParamSetHandle;
typedef struct OfxImageMemoryStruct* OfxImageMemoryHandle;

// Rectangles are half-open: x1 <= x < x2.
struct OfxRectI { int x1, y1, x2, y2; };
struct OfxRectD { double x1, y1, x2, y2; };
struct OfxRangeD { double min, max; };
struct OfxPointD { double x, y; };

struct OfxHost {
  OfxPropertySetHandle host;
  const void* (*fetchSuite)(OfxPropertySetHandle host, const char* suiteName, int suiteVersion);
};

typedef OfxStatus(OfxPluginEntryPoint)(const char* action, const void* handle, OfxPropertySetHandle inArgs,
                                       OfxPropertySetHandle outArgs);

struct OfxPlugin {
  const char* pluginApi;
  int apiVersion;
  const char* pluginIdentifier;
  unsigned int pluginVersionMajor;
  unsigned int pluginVersionMinor;
  void (*setHost)(OfxHost* host);
  OfxPluginEntryPoint* mainEntry;
};

struct OfxPropertySuiteV1 {
  OfxStatus (*propSetPointer)(OfxPropertySetHandle props, const char* name, int index, void* value);
  OfxStatus (*propSetString)(OfxPropertySetHandle props, const char* name, int index, const char* value);
  OfxStatus (*propSetDouble)(OfxPropertySetHandle props, const char* name, int index, double value);
  OfxStatus (*propSetInt)(OfxPropertySetHandle props, const char* name, int index, int value);
  OfxStatus (*propSetPointerN)(OfxPropertySetHandle props, const char* name, int count, void* const* value);
  OfxStatus (*propSetStringN)(OfxPropertySetHandle props, const char* name, int count, const char* const* value);
  OfxStatus (*propSetDoubleN)(OfxPropertySetHandle props, const char* name, int count, const double* value);
  OfxStatus (*propSetIntN)(OfxPropertySetHandle props, const char* name, int count, const int* value);
  OfxStatus (*propGetPointer)(OfxPropertySetHandle props, const char* name, int index, void** value);
  OfxStatus (*propGetString)(OfxPropertySetHandle props, const char* name, int index, char** value);
  OfxStatus (*propGetDouble)(OfxPropertySetHandle props, const char* name, int index, double* value);
  OfxStatus (*propGetInt)(OfxPropertySetHandle props, const char* name, int index, int* value);
  OfxStatus (*propGetPointerN)(OfxPropertySetHandle props, const char* name, int count, void** value);
  OfxStatus (*propGetStringN)(OfxPropertySetHandle props, const char* name, int count, char** value);
  OfxStatus (*propGetDoubleN)(OfxPropertySetHandle props, const char* name, int count, double* value);
  OfxStatus (*propGetIntN)(OfxPropertySetHandle props, const char* name, int count, int* value);
  OfxStatus (*propReset)(OfxPropertySetHandle props, const char* name);
  OfxStatus (*propGetDimension)(OfxPropertySetHandle props, const char* name, int* count);
};

struct OfxImageEffectSuiteV1 {
  OfxStatus (*getPropertySet)(OfxImageEffectHandle effect, OfxPropertySetHandle* props);
  OfxStatus (*getParamSet)(OfxImageEffectHandle effect, OfxParamSetHandle* paramSet);
  OfxStatus (*clipDefine)(OfxImageEffectHandle effect, const char* name, OfxPropertySetHandle* props);
  OfxStatus (*clipGetHandle)(OfxImageEffectHandle effect, const char* name, OfxImageClipHandle* clip,
                             OfxPropertySetHandle* props);
  OfxStatus (*clipGetPropertySet)(OfxImageClipHandle clip, OfxPropertySetHandle* props);
  OfxStatus (*clipGetImage)(OfxImageClipHandle clip, OfxTime time, const OfxRectD* region,
                            OfxPropertySetHandle* image);
  OfxStatus (*clipReleaseImage)(OfxPropertySetHandle image);
  OfxStatus (*clipGetRegionOfDefinition)(OfxImageClipHandle clip, OfxTime time, OfxRectD* bounds);
  int (*abort)(OfxImageEffectHandle effect);
  OfxStatus (*imageMemoryAlloc)(OfxImageEffectHandle effect, size_t nBytes, OfxImageMemoryHandle* memory);
  OfxStatus (*imageMemoryFree)(OfxImageMemoryHandle memory);
  OfxStatus (*imageMemoryLock)(OfxImageMemoryHandle memory, void** ptr);
  OfxStatus (*imageMemoryUnlock)(OfxImageMemoryHandle memory);
};

struct OfxParameterSuiteV1 {
  OfxStatus (*paramDefine)(OfxParamSetHandle paramSet, const char* paramType, const char* name,
                           OfxPropertySetHandle* props);
  OfxStatus (*paramGetHandle)(OfxParamSetHandle paramSet, const char* name, OfxParamHandle* param,
                              OfxPropertySetHandle* props);
  OfxStatus (*paramSetGetPropertySet)(OfxParamSetHandle paramSet, OfxPropertySetHandle* props);
  OfxStatus (*paramGetPropertySet)(OfxParamHandle param, OfxPropertySetHandle* props);
  OfxStatus (*paramGetValue)(OfxParamHandle param, ...);
  OfxStatus (*paramGetValueAtTime)(OfxParamHandle param, OfxTime time, ...);
  OfxStatus (*paramGetDerivative)(OfxParamHandle param, OfxTime time, ...);
  OfxStatus (*paramGetIntegral)(OfxParamHandle param, OfxTime time1, OfxTime time2, ...);
  OfxStatus (*paramSetValue)(OfxParamHandle param, ...);
  OfxStatus (*paramSetValueAtTime)(OfxParamHandle param, OfxTime time, ...);
  OfxStatus (*paramGetNumKeys)(OfxParamHandle param, unsigned int* numberOfKeys);
  OfxStatus (*paramGetKeyTime)(OfxParamHandle param, unsigned int nthKey, OfxTime* time);
  OfxStatus (*paramGetKeyIndex)(OfxParamHandle param, OfxTime time, int direction, int* index);
  OfxStatus (*paramDeleteKey)(OfxParamHandle param, OfxTime time);
  OfxStatus (*paramDeleteAllKeys)(OfxParamHandle param);
  OfxStatus (*paramCopy)(OfxParamHandle to, OfxParamHandle from, OfxTime dstOffset, const OfxRangeD* range);
  OfxStatus (*paramEditBegin)(OfxParamSetHandle paramSet, const char* name);
  OfxStatus (*paramEditEnd)(OfxParamSetHandle paramSet);
};

struct OfxMessageSuiteV1 {
  // Variadic printf-style; the plugin always passes "%s" and one string.
  OfxStatus (*message)(void* handle, const char* messageType, const char* messageId, const char* format, ...);
};

// Version 2 adds messages that stay on the node until cleared (no dialog per failed frame).
struct OfxMessageSuiteV2 {
  OfxStatus (*message)(void* handle, const char* messageType, const char* messageId, const char* format, ...);
  OfxStatus (*setPersistentMessage)(void* handle, const char* messageType, const char* messageId,
                                    const char* format, ...);
  OfxStatus (*clearPersistentMessage)(void* handle);
};

}  // extern "C"

// Status codes.
#define kOfxStatOK 0
#define kOfxStatFailed 1
#define kOfxStatErrFatal 2
#define kOfxStatErrUnknown 3
#define kOfxStatErrMissingHostFeature 4
#define kOfxStatErrUnsupported 5
#define kOfxStatErrExists 6
#define kOfxStatErrFormat 7
#define kOfxStatErrMemory 8
#define kOfxStatErrBadHandle 9
#define kOfxStatErrBadIndex 10
#define kOfxStatErrValue 11
#define kOfxStatReplyYes 12
#define kOfxStatReplyNo 13
#define kOfxStatReplyDefault 14

// API and suites.
#define kOfxImageEffectPluginApi "OfxImageEffectPluginAPI"
#define kOfxPropertySuite "OfxPropertySuite"
#define kOfxImageEffectSuite "OfxImageEffectSuite"
#define kOfxParameterSuite "OfxParameterSuite"
#define kOfxMessageSuite "OfxMessageSuite"

// Actions.
#define kOfxActionLoad "OfxActionLoad"
#define kOfxActionUnload "OfxActionUnload"
#define kOfxActionDescribe "OfxActionDescribe"
#define kOfxActionCreateInstance "OfxActionCreateInstance"
#define kOfxActionDestroyInstance "OfxActionDestroyInstance"
#define kOfxActionPurgeCaches "OfxActionPurgeCaches"
#define kOfxImageEffectActionDescribeInContext "OfxImageEffectActionDescribeInContext"
#define kOfxImageEffectActionGetClipPreferences "OfxImageEffectActionGetClipPreferences"
#define kOfxImageEffectActionGetRegionOfDefinition "OfxImageEffectActionGetRegionOfDefinition"
#define kOfxImageEffectActionGetRegionsOfInterest "OfxImageEffectActionGetRegionsOfInterest"
#define kOfxImageEffectActionGetFramesNeeded "OfxImageEffectActionGetFramesNeeded"
#define kOfxImageEffectActionIsIdentity "OfxImageEffectActionIsIdentity"
#define kOfxImageEffectActionRender "OfxImageEffectActionRender"
#define kOfxImageEffectActionBeginSequenceRender "OfxImageEffectActionBeginSequenceRender"
#define kOfxImageEffectActionEndSequenceRender "OfxImageEffectActionEndSequenceRender"

// Generic properties.
#define kOfxPropName "OfxPropName"
#define kOfxPropLabel "OfxPropLabel"
#define kOfxPropTime "OfxPropTime"
#define kOfxPropPluginDescription "OfxPropPluginDescription"

// Image effect (descriptor and instance) properties.
#define kOfxImageEffectPropContext "OfxImageEffectPropContext"
#define kOfxImageEffectPropSupportedContexts "OfxImageEffectPropSupportedContexts"
#define kOfxImageEffectContextGeneral "OfxImageEffectContextGeneral"
#define kOfxImageEffectContextFilter "OfxImageEffectContextFilter"
#define kOfxImageEffectPluginPropGrouping "OfxImageEffectPluginPropGrouping"
#define kOfxImageEffectPropSupportedPixelDepths "OfxImageEffectPropSupportedPixelDepths"
#define kOfxImageEffectPropSupportsTiles "OfxImageEffectPropSupportsTiles"
#define kOfxImageEffectPropSupportsMultiResolution "OfxImageEffectPropSupportsMultiResolution"
#define kOfxImageEffectPropTemporalClipAccess "OfxImageEffectPropTemporalClipAccess"
#define kOfxImageEffectPluginRenderThreadSafety "OfxImageEffectPluginRenderThreadSafety"
#define kOfxImageEffectRenderFullySafe "OfxImageEffectRenderFullySafe"
#define kOfxImageEffectPluginPropHostFrameThreading "OfxImageEffectPluginPropHostFrameThreading"
#define kOfxImageEffectPropFrameRange "OfxImageEffectPropFrameRange"
#define kOfxImageEffectPropRenderWindow "OfxImageEffectPropRenderWindow"
#define kOfxImageEffectPropRenderScale "OfxImageEffectPropRenderScale"
#define kOfxImageEffectPropRegionOfDefinition "OfxImageEffectPropRegionOfDefinition"

// Clip properties.
#define kOfxImageEffectOutputClipName "Output"
#define kOfxImageEffectSimpleSourceClipName "Source"
#define kOfxImageClipPropOptional "OfxImageClipPropOptional"
#define kOfxImageClipPropIsMask "OfxImageClipPropIsMask"
#define kOfxImageClipPropConnected "OfxImageClipPropConnected"
#define kOfxImageEffectPropSupportedComponents "OfxImageEffectPropSupportedComponents"
#define kOfxImageEffectPropComponents "OfxImageEffectPropComponents"
#define kOfxImageEffectPropPixelDepth "OfxImageEffectPropPixelDepth"
#define kOfxImageComponentRGBA "OfxImageComponentRGBA"
#define kOfxImageComponentRGB "OfxImageComponentRGB"
#define kOfxImageComponentAlpha "OfxImageComponentAlpha"
#define kOfxBitDepthFloat "OfxBitDepthFloat"
#define kOfxImageClipPropFrameRangePrefix "OfxImageClipPropFrameRange_"
#define kOfxImageClipPropRoIPrefix "OfxImageClipPropRoI_"
#define kOfxImageClipPropComponentsPrefix "OfxImageClipPropComponents_"
#define kOfxImageClipPropDepthPrefix "OfxImageClipPropDepth_"

// Premultiplication state of a clip or an image.
#define kOfxImageEffectPropPreMultiplication "OfxImageEffectPropPreMultiplication"
#define kOfxImageOpaque "OfxImageOpaque"
#define kOfxImagePreMultiplied "OfxImageAlphaPremultiplied"
#define kOfxImageUnPreMultiplied "OfxImageAlphaUnPremultiplied"

// Image properties.
#define kOfxImagePropData "OfxImagePropData"
#define kOfxImagePropBounds "OfxImagePropBounds"
#define kOfxImagePropRowBytes "OfxImagePropRowBytes"

// Parameters.
#define kOfxParamTypeInteger "OfxParamTypeInteger"
#define kOfxParamTypeDouble "OfxParamTypeDouble"
#define kOfxParamTypeBoolean "OfxParamTypeBoolean"
#define kOfxParamTypeChoice "OfxParamTypeChoice"
#define kOfxParamTypeString "OfxParamTypeString"
#define kOfxParamPropDefault "OfxParamPropDefault"
#define kOfxParamPropMin "OfxParamPropMin"
#define kOfxParamPropMax "OfxParamPropMax"
#define kOfxParamPropDisplayMin "OfxParamPropDisplayMin"
#define kOfxParamPropDisplayMax "OfxParamPropDisplayMax"
#define kOfxParamPropHint "OfxParamPropHint"
#define kOfxParamPropAnimates "OfxParamPropAnimates"
#define kOfxParamPropChoiceOption "OfxParamPropChoiceOption"
#define kOfxParamPropStringMode "OfxParamPropStringMode"
#define kOfxParamStringIsFilePath "OfxParamStringIsFilePath"
#define kOfxParamPropStringFilePathExists "OfxParamPropStringFilePathExists"

// Messages.
#define kOfxMessageError "OfxMessageError"
#define kOfxMessageWarning "OfxMessageWarning"
