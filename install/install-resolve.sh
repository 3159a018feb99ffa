#!/usr/bin/env bash
# Install the CombCN Inpaint script for DaVinci Resolve (this user only): Workspace > Scripts > CombCN Inpaint.
#
# What it does: writes one file, "CombCN Inpaint.lua", into the per-user Fusion Scripts/Utility folder
# (creating the folders if missing):
#   Linux: ~/.local/share/DaVinciResolve/Fusion/Scripts/Utility/
#   macOS: ~/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Utility/
# (Windows, by hand: copy the same file to
#   %APPDATA%\Blackmagic Design\DaVinci Resolve\Support\Fusion\Scripts\Utility\ ; see docs/HOSTS.md.)
# The file is a short Lua launcher (the free Resolve 21.1 lists only Lua scripts there) that hands
# Resolve's Python 3 a few lines importing <repo>/plugin/resolve/combcn_resolve.py with the combcn program
# to run; on a Resolve without Python scripting (free 21.1 and later) it prints one line saying so.
# A "CombCN Inpaint.py" an earlier version of this installer wrote is removed. Re-running rewrites the
# launcher (idempotent). Undo: install/uninstall-resolve.sh.
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
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) say "error: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done
dir="${prefix:-$(default_scripts_dir)}"
script="$dir/CombCN Inpaint.lua"
old_script="$dir/CombCN Inpaint.py"  # what earlier versions wrote: Python scripts are not listed on free 21.1
header='-- CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh,'

executable="$(find_combcn "$executable" "the script")" || exit 2
for path in "$repo" "$executable" "$dir"; do
    case "$path" in *"'"*|*"\\"*|*$'\n'*|*"]=="*) say "error: cannot write a path with quotes or backslashes: $path"; exit 2 ;; esac
done

# The outermost folder this installer creates (kept from an earlier install), for uninstall to remove.
created=""
if [ -f "$script" ]; then
    created="$(sed -n 's/^-- combcn-created-dir: //p' "$script")"
elif [ -f "$old_script" ] && grep -q '^# CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh' "$old_script"; then
    created="$(sed -n 's/^# combcn-created-dir: //p' "$old_script")"
elif [ ! -d "$dir" ]; then
    created="$dir"
    while [ ! -d "$(dirname "$created")" ]; do created="$(dirname "$created")"; done
fi
mkdir -p "$dir"

tmp="$dir/.CombCN Inpaint.lua.combcn-tmp"
if [ -n "$executable" ]; then launch="combcn_resolve.launch(globals(), executable='$executable')"
else launch="combcn_resolve.launch(globals())"; fi
{
    printf '%s\n' "$header"
    printf -- '-- removed by install/uninstall-resolve.sh. The code is in %s/plugin/resolve.\n' "$repo"
    [ -z "$created" ] || printf -- '-- combcn-created-dir: %s\n' "$created"
    cat <<LUA
-- One line in Workspace > Console, and the same text in a window (Fusion's UIManager) when there is one.
local function show(text)
    print(text)
    pcall(function()
        local ui = (fu or fusion or app).UIManager
        local disp = bmd.UIDispatcher(ui)
        local win = disp:AddWindow({ ID = "CombCNMessage", WindowTitle = "CombCN Inpaint", Geometry = { 400, 300, 520, 120 } },
            ui:VGroup({ ui:Label({ ID = "Status", Text = text, WordWrap = true }),
                ui:HGroup({ ui:HGap(0, 1), ui:Button({ ID = "OK", Text = "OK" }) }) }))
        function win.On.OK.Clicked(ev) disp:ExitLoop() end
        function win.On.CombCNMessage.Close(ev) disp:ExitLoop() end
        win:Show()
        disp:RunLoop()
        win:Hide()
    end)
end
local host = (app and app.GetResolve and app:GetResolve()) or resolve
local product, version = "", ""
if host then
    product = host:GetProductName() or ""
    version = host:GetVersionString() or ""
end
local major, minor = string.match(version, "^(%d+)%.(%d+)")
major, minor = tonumber(major) or 0, tonumber(minor) or 0
-- Resolve 21.1 runs Python scripts in the Studio edition only.
if not string.find(product, "Studio", 1, true) and (major > 21 or (major == 21 and minor >= 1)) then
    show("CombCN: error: the free DaVinci Resolve " .. major .. "." .. minor .. " runs no Python scripts; "
        .. "CombCN Inpaint needs DaVinci Resolve Studio, or the free edition up to 21.0 (docs/HOSTS.md)")
    return
end
-- The Python part's first act is to create this file: if it is not there afterwards, no Python 3 ran.
local marker = os.tmpname()
os.remove(marker)
local code = [==[!Py3: open(r'@MARKER@', 'w').close()
import sys
sys.path[:0] = ['$repo/plugin/resolve', '$repo/plugin/common']
try:
    import combcn_resolve
except Exception as exc:
    print('CombCN: error: cannot load the script from $repo/plugin (%s); re-run install/install-resolve.sh' % exc)
else:
    $launch
]==]
code = string.gsub(code, "@MARKER@", function() return marker end)
local runner = fusion or fu or app
local ok, answer = pcall(function() return runner:Execute(code) end)
local ran = io.open(marker, "r")
if ran then
    ran:close()
    os.remove(marker)
else
    show("CombCN: error: Resolve started no Python 3 for CombCN Inpaint (Execute gave " .. tostring(answer)
        .. "); install Python 3 as Resolve's scripting README says for your system, restart Resolve and run it again")
end
LUA
} >"$tmp"
mv -f "$tmp" "$script"
if [ -f "$old_script" ] && grep -q '^# CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh' "$old_script"; then
    rm -f "$old_script"
    say "removed $old_script (the Lua launcher replaces it)"
fi
say "wrote $script"
say "engine: ${executable:-combcn on PATH}; restart Resolve, then Workspace > Scripts > CombCN Inpaint"
