#!/usr/bin/env bash
# Install the CombCN Inpaint script for DaVinci Resolve (this user only): Workspace > Scripts > CombCN Inpaint.
#
# What it does: writes one file, "CombCN Inpaint.py", into the per-user Fusion Scripts/Utility folder
# (creating the folders if missing):
#   Linux: ~/.local/share/DaVinciResolve/Fusion/Scripts/Utility/
#   macOS: ~/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility/
# (Windows, by hand: copy the same file to
#   %APPDATA%\Blackmagic Design\DaVinci Resolve\Support\Fusion\Scripts\Utility\ ; see docs/HOSTS.md.)
# The file is a 10-line launcher that imports <repo>/plugin/resolve/combcn_resolve.py and passes it the
# combcn program to run. Re-running rewrites it (idempotent). Undo: install/uninstall-resolve.sh.
#
#   --prefix DIR        the scripts folder to write into (default: the per-user Utility folder above)
#   --executable PATH   the combcn program (default: <repo>/.venv/bin/combcn, else combcn on PATH;
#                       COMBCN_EXECUTABLE set when Resolve starts still wins)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf 'install-resolve: %s\n' "$*" >&2; }
# shellcheck source=install/hostlib.sh
source "$(dirname "${BASH_SOURCE[0]}")/hostlib.sh"

default_scripts_dir() {
    case "$(uname -s)" in
        Darwin) printf '%s\n' "$HOME/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility" ;;
        *) printf '%s\n' "$HOME/.local/share/DaVinciResolve/Fusion/Scripts/Utility" ;;
    esac
}

prefix="" executable=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --executable) executable="${2:?--executable needs a path}"; shift 2 ;;
        --executable=*) executable="${1#*=}"; shift ;;
        -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
dir="${prefix:-$(default_scripts_dir)}"
script="$dir/CombCN Inpaint.py"

executable="$(find_combcn "$executable" "the script")" || exit 2
for path in "$repo" "$executable" "$dir"; do
    case "$path" in *"'"*|*"\\"*|*$'\n'*) say "error: cannot write a path with quotes or backslashes: $path"; exit 2 ;; esac
done

# The outermost folder this installer creates (kept from an earlier install), for uninstall to remove.
created=""
if [ -f "$script" ]; then
    created="$(sed -n 's/^# combcn-created-dir: //p' "$script")"
elif [ ! -d "$dir" ]; then
    created="$dir"
    while [ ! -d "$(dirname "$created")" ]; do created="$(dirname "$created")"; done
fi
mkdir -p "$dir"

tmp="$dir/.CombCN Inpaint.py.combcn-tmp"
{
    printf '# CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh,\n'
    printf '# removed by install/uninstall-resolve.sh. The code is in %s/plugin/resolve.\n' "$repo"
    [ -z "$created" ] || printf '# combcn-created-dir: %s\n' "$created"
    printf 'import sys\n\n'
    printf "sys.path[:0] = ['%s/plugin/resolve', '%s/plugin/common']\n" "$repo" "$repo"
    printf 'import combcn_resolve  # noqa: E402\n\n'
    if [ -n "$executable" ]; then
        printf "combcn_resolve.launch(globals(), executable='%s')\n" "$executable"
    else
        printf 'combcn_resolve.launch(globals())\n'
    fi
} >"$tmp"
mv -f "$tmp" "$script"
say "wrote $script"
say "engine: ${executable:-combcn on PATH}; restart Resolve, then Workspace > Scripts > CombCN Inpaint"
