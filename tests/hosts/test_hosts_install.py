"""The host installers (install/*-nuke.sh, *-resolve.sh, *-ofx.sh), run for real in a temporary HOME.

Each round trip: snapshot HOME (every path, its bytes and mode), install, install again (must give the
same tree: idempotent), uninstall (must give back the first snapshot exactly: no trace), uninstall
again (a no-op). The OpenFX installer installs the real bundle built from the root CMakeLists.txt, and
the installed copy is loaded with ctypes.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import pytest
from fakes import REPO
from ofx_host.fixtures import BINARY, BUILD, build_bundle
from ofx_host.host import OfxPluginStruct

INSTALL = REPO / "install"
Snapshot = dict[str, tuple[str, bytes, int]]


def snapshot(root: Path) -> Snapshot:
    tree: Snapshot = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode & 0o7777
        data = path.read_bytes() if path.is_file() else b""
        tree[str(path.relative_to(root))] = ("dir" if path.is_dir() else "file", data, mode)
    return tree


def run(script: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    proc = subprocess.run(
        [str(INSTALL / script), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{script} {args}: {proc.stdout}\n{proc.stderr}"
    return proc


def round_trip(host: str, home: Path, *args: str) -> tuple[Snapshot, str]:
    """Install twice (same tree), uninstall twice (original tree); returns (installed tree, stdout)."""
    before = snapshot(home)
    first = run(f"install-{host}.sh", home, *args)
    installed = snapshot(home)
    assert installed != before
    run(f"install-{host}.sh", home, *args)
    assert snapshot(home) == installed, "a second install changed the tree"
    extra = [a for a in args if a in ("--system",)] + _prefix_args(args)
    run(f"uninstall-{host}.sh", home, *extra)
    assert snapshot(home) == before, "uninstall left a trace"
    again = run(f"uninstall-{host}.sh", home, *extra)
    assert "nothing to remove" in again.stderr
    return installed, first.stdout


def _prefix_args(args: tuple[str, ...]) -> list[str]:
    return list(args[args.index("--prefix") : args.index("--prefix") + 2]) if "--prefix" in args else []


@pytest.fixture
def combcn_exe(tmp_path: Path) -> Path:
    exe = tmp_path / "bin" / "combcn"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


class TestNuke:
    def test_empty_home(self, tmp_path: Path, combcn_exe: Path) -> None:
        home = tmp_path / "home"
        home.mkdir()
        installed, _ = round_trip("nuke", home, "--executable", str(combcn_exe))
        text = installed[".nuke/init.py"][1].decode()
        assert f"nuke.pluginAddPath('{REPO / 'plugin' / 'nuke'}')" in text
        assert f"combcn_nuke.set_installed_executable('{combcn_exe}')" in text
        assert snapshot(home) == {}

    def test_existing_init_kept_byte_for_byte(self, tmp_path: Path, combcn_exe: Path) -> None:
        home = tmp_path / "home"
        (home / ".nuke").mkdir(parents=True)
        (home / ".nuke" / "init.py").write_text(
            "import nuke\nnuke.pluginAddPath('/studio/tools')"
        )  # no final \n
        (home / ".nuke" / "init.py").chmod(0o640)
        (home / ".nuke" / "menu.py").write_text("# mine\n")
        installed, _ = round_trip("nuke", home, "--executable", str(combcn_exe))
        text = installed[".nuke/init.py"][1].decode()
        assert text.startswith("import nuke\nnuke.pluginAddPath('/studio/tools')\n# >>> combcn >>>")
        assert text.count("# >>> combcn >>>") == 1 and installed[".nuke/init.py"][2] == 0o640

    def test_prefix(self, tmp_path: Path, combcn_exe: Path) -> None:
        home = tmp_path / "home"
        home.mkdir()
        installed, _ = round_trip(
            "nuke", home, "--prefix", str(home / "studio_nuke"), "--executable", str(combcn_exe)
        )
        assert "studio_nuke/init.py" in installed and ".nuke" not in installed


class TestResolve:
    UTILITY = ".local/share/DaVinciResolve/Fusion/Scripts/Utility"

    def test_empty_home(self, tmp_path: Path, combcn_exe: Path) -> None:
        home = tmp_path / "home"
        home.mkdir()
        installed, _ = round_trip("resolve", home, "--executable", str(combcn_exe))
        text = installed[f"{self.UTILITY}/CombCN Inpaint.lua"][1].decode()
        assert f"'{REPO}/plugin/resolve', '{REPO}/plugin/common'" in text
        assert f"combcn_resolve.launch(globals(), executable='{combcn_exe}')" in text
        python = text.split("[==[!Py3: ", 1)[1].split("]==]", 1)[0]
        compile(python, "CombCN Inpaint.lua", "exec")  # the part Resolve's Python runs
        assert snapshot(home) == {}

    def test_existing_scripts_folder_kept(self, tmp_path: Path, combcn_exe: Path) -> None:
        home = tmp_path / "home"
        comp = home / ".local/share/DaVinciResolve/Fusion/Scripts/Comp"
        comp.mkdir(parents=True)
        (comp / "mine.lua").write_text("print('hi')\n")
        installed, _ = round_trip("resolve", home, "--executable", str(combcn_exe))
        assert f"{self.UTILITY}/CombCN Inpaint.lua" in installed

    def test_uninstall_refuses_a_foreign_file(self, tmp_path: Path) -> None:
        for name in ("CombCN Inpaint.lua", "CombCN Inpaint.py"):
            script = tmp_path / name / "Utility" / name
            script.parent.mkdir(parents=True)
            script.write_text("print('someone else')\n")
            proc = subprocess.run(
                [str(INSTALL / "uninstall-resolve.sh"), "--prefix", str(script.parent)],
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 1 and "not written by install-resolve.sh" in proc.stderr
            assert script.exists()

    def test_earlier_python_launcher_is_replaced_and_uninstalled(
        self, tmp_path: Path, combcn_exe: Path
    ) -> None:
        home = tmp_path / "home"
        utility = home / self.UTILITY
        utility.mkdir(parents=True)
        old = utility / "CombCN Inpaint.py"
        old.write_text(
            "# CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh,\nx = 1\n"
        )
        run("uninstall-resolve.sh", home)  # an earlier install alone is removed too
        assert not old.exists()
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_text(
            "# CombCN Inpaint (Workspace > Scripts): written by install/install-resolve.sh,\nx = 1\n"
        )
        run("install-resolve.sh", home, "--executable", str(combcn_exe))
        assert sorted(p.name for p in utility.iterdir()) == ["CombCN Inpaint.lua"]


class TestOfx:
    def test_real_bundle_round_trip_and_load(self, tmp_path: Path, combcn_exe: Path) -> None:
        build_bundle()  # the OpenFX tests' locked, incremental build (build/ofx-test)
        home = tmp_path / "home"
        (home / ".local").mkdir(parents=True)
        args = ("--build-dir", str(BUILD), "--executable", str(combcn_exe))
        before = snapshot(home)
        out = run("install-ofx.sh", home, *args).stdout
        dest = home / ".local/share/OFX/Plugins"
        binary = dest / "CombCN.ofx.bundle/Contents/Linux-x86-64/CombCN.ofx"
        assert binary.read_bytes() == BINARY.read_bytes()
        assert f'export OFX_PLUGIN_PATH="{dest}' in out and f'export COMBCN_SERVE="{combcn_exe}"' in out
        library = ctypes.CDLL(str(binary))  # the installed copy is a loadable OpenFX plugin
        library.OfxGetNumberOfPlugins.restype = ctypes.c_int
        library.OfxGetPlugin.restype = ctypes.POINTER(OfxPluginStruct)
        assert library.OfxGetNumberOfPlugins() == 1
        plugin = library.OfxGetPlugin(0).contents
        assert (plugin.pluginApi, plugin.pluginIdentifier) == (
            b"OfxImageEffectPluginAPI",
            b"io.github.combcn.Inpaint",
        )
        installed = snapshot(home)
        run("install-ofx.sh", home, *args)
        assert snapshot(home) == installed
        run("uninstall-ofx.sh", home)
        assert snapshot(home) == before

    def test_prefix_and_foreign_bundle(self, tmp_path: Path, combcn_exe: Path) -> None:
        build_bundle()
        home = tmp_path / "home"
        home.mkdir()
        plugins = home / "OFX" / "Plugins"
        installed, out = round_trip(
            "ofx",
            home,
            "--prefix",
            str(plugins),
            "--build-dir",
            str(BUILD),
            "--no-build",
            "--executable",
            str(combcn_exe),
        )
        assert "OFX/Plugins/CombCN.ofx.bundle/Contents/Info.plist" in installed and str(plugins) in out
        foreign = plugins / "CombCN.ofx.bundle" / "Contents"
        foreign.mkdir(parents=True)
        (foreign / "Info.plist").write_text("<plist>someone else's</plist>")
        proc = subprocess.run(
            [str(INSTALL / "uninstall-ofx.sh"), "--prefix", str(plugins)], capture_output=True, text=True
        )
        assert proc.returncode == 1 and "not the CombCN plugin" in proc.stderr and foreign.exists()

    def test_missing_bundle_without_build_is_a_clear_error(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            [
                str(INSTALL / "install-ofx.sh"),
                "--prefix",
                str(tmp_path / "p"),
                "--build-dir",
                str(tmp_path),
                "--no-build",
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and "no plugin binary" in proc.stderr and not (tmp_path / "p").exists()
