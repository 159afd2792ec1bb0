"""``python -m clowdr``."""
from clowdr.cli import main_exit

main_exit()
