"""combcn for Nuke, GUI sessions: adds Nodes > CombCN > CombCN Inpaint."""

import combcn_nuke

combcn_nuke.add_menu()
