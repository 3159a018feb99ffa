#!/usr/bin/env bash
# Uninstall the CombCN Inpaint node for Nuke: removes the block install-nuke.sh added to ~/.nuke/init.py.
# If install-nuke.sh created init.py (or ~/.nuke) and nothing else is left in it, that is removed too.
# Safe to run when nothing is installed.
#
#   --prefix DIR   the Nuke user folder (default: $HOME/.nuke)
set -euo pipefail
say() { printf 'uninstall-nuke: %s\n' "$*" >&2; }
prefix=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a folder}"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        -h|--help) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
nuke_dir="${prefix:-$HOME/.nuke}"
init="$nuke_dir/init.py"
begin='# >>> combcn >>> (added by install-nuke.sh; remove with uninstall-nuke.sh)'
end='# <<< combcn <<<'

if [ ! -f "$init" ] || ! grep -qxF "$begin" "$init"; then
    say "nothing to remove (no combcn block in $init)"
    exit 0
fi
created="$(awk -v b="$begin" -v e="$end" '$0==b{in_=1} in_ && /^# combcn-created:/{sub(/^# combcn-created: */,""); print} $0==e{in_=0}' "$init")"
tmp="$init.combcn-tmp"
cp -p "$init" "$tmp"
awk -v b="$begin" -v e="$end" '$0==b{skip=1} !skip{print} $0==e{skip=0}' "$init" >"$tmp"
mv -f "$tmp" "$init"
say "removed the combcn block from $init"
case " $created " in
    *" eol "*) perl -pi -e 'chomp if eof' "$init" ;;  # restore the missing final newline exactly
esac
case " $created " in
    *" file "*)
        if ! grep -q '[^[:space:]]' "$init"; then
            rm -f "$init"
            say "removed $init (created by install-nuke.sh, now empty)"
        fi ;;
esac
case " $created " in
    *" dir "*)
        if [ -d "$nuke_dir" ] && [ -z "$(ls -A "$nuke_dir")" ]; then
            rmdir "$nuke_dir"
            say "removed $nuke_dir (created by install-nuke.sh, now empty)"
        fi ;;
esac
