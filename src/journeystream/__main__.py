import sys

from journeystream.cli import main

sys.exit(main())
