import sys

from ofx_host.host import main

sys.exit(main(sys.argv[1:]))
