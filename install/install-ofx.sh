#!/usr/bin/env bash
# Install the CombCN OpenFX plugin (CombCN.ofx.bundle) for OpenFX hosts (Resolve, Nuke, Natron, Fusion, Flame).
#
# What it does:
#   1. builds the bundle with cmake if needed (cmake -S <repo> -B <build dir>; cmake --build, incremental);
#   2. copies CombCN.ofx.bundle into the plugin folder, replacing an earlier copy:
#        default    ~/.local/share/OFX/Plugins   (not searched by hosts: set OFX_PLUGIN_PATH, printed below)
#        --system   /usr/OFX/Plugins             (every host's default search path; needs root)
#   3. prints the environment to set: OFX_PLUGIN_PATH (user folder) and COMBCN_SERVE (the combcn program
#      the plugin starts as its server). It edits no shell start-up file.
# Re-running replaces the copy (idempotent). Undo: install/uninstall-ofx.sh with the same options.
#
#   --system            install into /usr/OFX/Plugins
#   --prefix DIR        the plugin folder to install into (wins over the two above)
#   --build-dir DIR     cmake build folder (default: <repo>/build)
#   --no-build          do not run cmake; use the bundle already in the build folder
#   --executable PATH   the combcn program to print for COMBCN_SERVE (default: <repo>/.venv/bin/combcn)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf 'install-ofx: %s\n' "$*" >&2; }
# shellcheck source=install/hostlib.sh
source "$(dirname "${BASH_SOURCE[0]}")/hostlib.sh"

system=0 prefix="" build="$repo/build" no_build=0 executable=""
while [ $# -gt 0 ]; do
    case "$1" in
        --system) system=1; shift ;;
        --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --build-dir) build="${2:?--build-dir needs a folder}"; shift 2 ;;
        --build-dir=*) build="${1#*=}"; shift ;;
        --no-build) no_build=1; shift ;;
        --executable) executable="${2:?--executable needs a path}"; shift 2 ;;
        --executable=*) executable="${1#*=}"; shift ;;
        -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
dest="$(ofx_plugin_dir "$prefix" "$system")"
bundle="$build/CombCN.ofx.bundle"
binary="$bundle/Contents/Linux-x86-64/CombCN.ofx"

if [ "$no_build" = 0 ]; then
    if command -v cmake >/dev/null 2>&1; then
        if [ ! -f "$build/CMakeCache.txt" ]; then
            say "configuring $build"
            cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
        fi
        say "building the bundle in $build (incremental)"
        cmake --build "$build" -j "${MAX_JOBS:-2}" >/dev/null
    elif [ -f "$binary" ]; then
        say "warning: cmake not found; installing the bundle already built in $build"
    else
        say "error: cmake not found and no bundle in $build; install cmake and a C++17 compiler"; exit 1
    fi
fi
if [ ! -f "$binary" ]; then
    say "error: no plugin binary at $binary (build it: cmake -S $repo -B $build && cmake --build $build)"
    exit 1
fi
if ! grep -q 'io.github.combcn.Inpaint' "$bundle/Contents/Info.plist" 2>/dev/null; then
    say "error: $bundle/Contents/Info.plist is missing or not the CombCN plugin's"; exit 1
fi

if [ -z "$executable" ]; then
    if [ -x "$repo/.venv/bin/combcn" ]; then executable="$repo/.venv/bin/combcn"; else executable="$(command -v combcn || true)"; fi
fi

target="$dest/CombCN.ofx.bundle"
record="$target/Contents/combcn-install.txt"
# The outermost folder this installer creates (kept from an earlier install), for uninstall to remove.
created=""
if [ -f "$record" ]; then
    created="$(sed -n 's/^created-dir: //p' "$record")"
elif [ ! -d "$dest" ]; then
    created="$dest"
    while [ ! -d "$(dirname "$created")" ]; do created="$(dirname "$created")"; done
fi
if ! mkdir -p "$dest" 2>/dev/null || [ ! -w "$dest" ]; then
    say "error: cannot write to $dest (for --system run it as root: sudo $0 --system)"; exit 1
fi

staging="$dest/.CombCN.ofx.bundle.combcn-tmp"
rm -rf "$staging"
cp -R "$bundle" "$staging"
{
    printf 'CombCN OpenFX plugin, installed by install/install-ofx.sh from %s\n' "$bundle"
    printf 'remove with install/uninstall-ofx.sh\n'
    [ -z "$created" ] || printf 'created-dir: %s\n' "$created"
} >"$staging/Contents/combcn-install.txt"
rm -rf "$target"
mv "$staging" "$target"
say "installed $target"
if [ -n "$prefix" ] || [ "$system" = 0 ]; then
    printf 'export OFX_PLUGIN_PATH="%s${OFX_PLUGIN_PATH:+:$OFX_PLUGIN_PATH}"\n' "$dest"
fi
if [ -n "$executable" ]; then
    printf 'export COMBCN_SERVE="%s"\n' "$executable"
else
    say "warning: no combcn program found: run install/setup.sh, then set COMBCN_SERVE to <repo>/.venv/bin/combcn"
fi
say "set the variable(s) above in the environment the host starts from (e.g. ~/.profile), then restart the host"
