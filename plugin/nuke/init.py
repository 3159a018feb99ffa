"""combcn for Nuke, run at every Nuke start (GUI, nuke -t, renders) once this folder is on the plugin path.

Add it with install/install-nuke.sh, or by hand in ~/.nuke/init.py::

    nuke.pluginAddPath("/path/to/combcn/plugin/nuke")

Only makes combcn_nuke (and the shared plugin/common/combcn_host) importable; no UI here (menu.py).
"""

import combcn_nuke  # noqa: F401  (puts plugin/common on sys.path for saved scripts' Render buttons)
