# Shared by the host installers (sourced, not run). Expects $repo and a say() function.

# find_combcn EXECUTABLE WHAT: print the combcn program the host should run (EXECUTABLE if given,
# else <repo>/.venv/bin/combcn, else combcn on PATH; empty when none) and warn or fail as needed.
find_combcn() {
    local executable="$1" what="$2"
    if [ -z "$executable" ]; then
        if [ -x "$repo/.venv/bin/combcn" ]; then
            executable="$repo/.venv/bin/combcn"
        else
            executable="$(command -v combcn || true)"
        fi
    fi
    if [ -z "$executable" ]; then
        say "warning: no combcn program found (run install/setup.sh); $what will look for combcn on PATH"
    elif [ ! -x "$executable" ]; then
        say "error: $executable is not an executable file"
        return 2
    fi
    printf '%s' "$executable"
}

# ofx_plugin_dir PREFIX SYSTEM: the OpenFX plugin folder (PREFIX, else /usr/OFX/Plugins with
# SYSTEM=1, else the per-user ~/.local/share/OFX/Plugins).
ofx_plugin_dir() {
    if [ -n "$1" ]; then
        printf '%s' "$1"
    elif [ "$2" = 1 ]; then
        printf '%s' "/usr/OFX/Plugins"
    else
        printf '%s' "$HOME/.local/share/OFX/Plugins"
    fi
}

# remove_empty_dirs FOLDER CREATED WHO: remove FOLDER and its parents while they are empty, up to and
# including CREATED (the outermost folder the installer WHO made); nothing when CREATED is empty.
remove_empty_dirs() {
    local folder="$1" created="$2" who="$3"
    [ -n "$created" ] || return 0
    while [ -d "$folder" ] && [ -z "$(ls -A "$folder")" ]; do
        rmdir "$folder"
        say "removed $folder (created by $who, now empty)"
        [ "$folder" != "$created" ] || break
        folder="$(dirname "$folder")"
    done
}
