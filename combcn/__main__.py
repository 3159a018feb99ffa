import sys

from combcn.cli import main

sys.exit(main())
