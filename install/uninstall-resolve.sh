#!/usr/bin/env bash
# Uninstall the CombCN Inpaint script for DaVinci Resolve: removes "CombCN Inpaint.lua" (and a
# "CombCN Inpaint.py" an earlier installer wrote) from the per-user Fusion Scripts/Utility folder, and
# the folders install-resolve.sh created if they are now empty.
# Safe to run when nothing is installed.
#
#   --prefix DIR   the scripts folder (default: the per-user Utility folder, see install-resolve.sh)
set -euo pipefail
say() { printf 'uninstall-resolve: %s\n' "$*" >&2; }
# shellcheck source=install/hostlib.sh
source "$(dirname "${BASH_SOURCE[0]}")/hostlib.sh"
prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
case "$(uname -s)" in
    Darwin) default="$HOME/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility" ;;
    *) default="$HOME/.local/share/DaVinciResolve/Fusion/Scripts/Utility" ;;
esac
dir="${prefix:-$default}"
removed=0 created=""
for script in "$dir/CombCN Inpaint.lua" "$dir/CombCN Inpaint.py"; do
    [ -f "$script" ] || continue
    case "$script" in *.lua) mark='-- ' ;; *) mark='# ' ;; esac
    if ! grep -q "^${mark}CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh" "$script"; then
        say "error: $script was not written by install-resolve.sh; remove it by hand"
        exit 1
    fi
    found="$(sed -n "s/^${mark}combcn-created-dir: //p" "$script")"
    created="${created:-$found}"
    rm -f "$script"
    say "removed $script"
    removed=1
done
if [ "$removed" = 0 ]; then
    say "nothing to remove ($dir/CombCN Inpaint.lua does not exist)"
    exit 0
fi
remove_empty_dirs "$dir" "$created" install-resolve.sh
