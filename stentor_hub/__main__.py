import sys

from stentor_hub.cli import main

sys.exit(main())
