#!/usr/bin/env bash
# Install the CombCN Inpaint node for Nuke (this user only).
#
# What it does: adds one marked block to ~/.nuke/init.py (creating the file, and ~/.nuke, if missing):
#     # >>> combcn >>> ...
#     import nuke
#     nuke.pluginAddPath('<repo>/plugin/nuke')
#     import combcn_nuke
#     combcn_nuke.set_installed_executable('<repo>/.venv/bin/combcn')
#     # <<< combcn <<<
# Re-running replaces the block (idempotent). Nothing else is written. Undo: install/uninstall-nuke.sh.
#
#   --prefix DIR        the Nuke user folder to edit (default: $HOME/.nuke)
#   --executable PATH   the combcn program the node runs (default: <repo>/.venv/bin/combcn, else combcn on
#                       PATH; COMBCN_EXECUTABLE set when Nuke starts still wins)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf 'install-nuke: %s\n' "$*" >&2; }
# shellcheck source=install/hostlib.sh
source "$(dirname "${BASH_SOURCE[0]}")/hostlib.sh"
usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

prefix="" executable=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --executable) executable="${2:?--executable needs a path}"; shift 2 ;;
        --executable=*) executable="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
nuke_dir="${prefix:-$HOME/.nuke}"
init="$nuke_dir/init.py"
plugin="$repo/plugin/nuke"

executable="$(find_combcn "$executable" "the node")" || exit 2
for path in "$plugin" "$executable"; do
    case "$path" in *"'"*|*"\\"*|*$'\n'*) say "error: cannot write a path with quotes or backslashes: $path"; exit 2 ;; esac
done

begin='# >>> combcn >>> (added by install-nuke.sh; remove with uninstall-nuke.sh)'
end='# <<< combcn <<<'

# What this installer created, kept from an earlier install so uninstall removes exactly that.
created=""
if [ -f "$init" ]; then
    created="$(awk -v b="$begin" -v e="$end" '$0==b{in_=1} in_ && /^# combcn-created:/{sub(/^# combcn-created: */,""); print} $0==e{in_=0}' "$init")"
else
    [ -d "$nuke_dir" ] || created="dir"
    created="${created:+$created }file"
    mkdir -p "$nuke_dir"
    : >"$init"
fi
if [ -s "$init" ] && [ -n "$(tail -c 1 "$init")" ] && ! grep -qxF "$begin" "$init"; then
    created="${created:+$created }eol"  # the file lacked a final newline: uninstall takes ours away again
fi

tmp="$init.combcn-tmp"
cp -p "$init" "$tmp"
{
    awk -v b="$begin" -v e="$end" '$0==b{skip=1} !skip{print} $0==e{skip=0}' "$init"
    printf '%s\n' "$begin"
    [ -z "$created" ] || printf '# combcn-created: %s\n' "$created"
    printf 'import nuke\n'
    printf "nuke.pluginAddPath('%s')\n" "$plugin"
    if [ -n "$executable" ]; then
        printf 'import combcn_nuke\n'
        printf "combcn_nuke.set_installed_executable('%s')\n" "$executable"
    fi
    printf '%s\n' "$end"
} >"$tmp"
mv -f "$tmp" "$init"
say "added $plugin to the Nuke plugin path in $init"
say "engine: ${executable:-combcn on PATH}; restart Nuke, then Nodes > CombCN > CombCN Inpaint"
