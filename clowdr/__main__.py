"""``python -m clowdr``."""
import sys

from clowdr.cli import main

sys.exit(main())
