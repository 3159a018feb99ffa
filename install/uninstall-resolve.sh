#!/usr/bin/env bash
# Uninstall the CombCN Inpaint script for DaVinci Resolve: removes "CombCN Inpaint.py" from the per-user
# Fusion Scripts/Utility folder, and the folders install-resolve.sh created if they are now empty.
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
        -h|--help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
case "$(uname -s)" in
    Darwin) default="$HOME/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility" ;;
    *) default="$HOME/.local/share/DaVinciResolve/Fusion/Scripts/Utility" ;;
esac
dir="${prefix:-$default}"
script="$dir/CombCN Inpaint.py"

if [ ! -f "$script" ]; then
    say "nothing to remove ($script does not exist)"
    exit 0
fi
if ! grep -q '^# CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh' "$script"; then
    say "error: $script was not written by install-resolve.sh; remove it by hand"
    exit 1
fi
created="$(sed -n 's/^# combcn-created-dir: //p' "$script")"
rm -f "$script"
say "removed $script"
remove_empty_dirs "$dir" "$created" install-resolve.sh
