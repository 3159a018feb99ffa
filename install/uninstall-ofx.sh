#!/usr/bin/env bash
# Uninstall the CombCN OpenFX plugin: removes CombCN.ofx.bundle from the plugin folder install-ofx.sh used,
# and the folders it created there if they are now empty. Leaves the build folder and your environment
# (OFX_PLUGIN_PATH, COMBCN_SERVE) alone. Safe to run when nothing is installed.
#
#   --system       the bundle in /usr/OFX/Plugins (needs root)
#   --prefix DIR   the plugin folder (default: ~/.local/share/OFX/Plugins)
set -euo pipefail
say() { printf 'uninstall-ofx: %s\n' "$*" >&2; }
# shellcheck source=install/hostlib.sh
source "$(dirname "${BASH_SOURCE[0]}")/hostlib.sh"
system=0 prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --system) system=1; shift ;;
        --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
dest="$(ofx_plugin_dir "$prefix" "$system")"
target="$dest/CombCN.ofx.bundle"
if [ ! -e "$target" ]; then
    say "nothing to remove ($target does not exist)"
    exit 0
fi
if ! grep -q 'io.github.combcn.Inpaint' "$target/Contents/Info.plist" 2>/dev/null; then
    say "error: $target is not the CombCN plugin (no io.github.combcn.Inpaint in its Info.plist); not removing it"
    exit 1
fi
created="$(sed -n 's/^created-dir: //p' "$target/Contents/combcn-install.txt" 2>/dev/null || true)"
rm -rf "$target"
say "removed $target"
remove_empty_dirs "$dest" "$created" install-ofx.sh
