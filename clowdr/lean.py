"""What clowdr's own processes (the CLI, Dask workers) need not import.

jsonschema imports ``rfc3987_syntax``, when it is installed (``jsonschema[format-nongpl]``, which Jupyter
brings), to check the "iri" string format; importing it compiles some forty grammars: about a second in every
process that validates a descriptor or builds a command line. Neither Boutiques nor clowdr checks formats (no
FormatChecker), so clowdr's own processes go without it. A user's interpreter (``import clowdr`` in a
notebook) is left alone.

A launch from the command line (``clowdr local``, ``cloud`` or ``task``: a process of clowdr's own) goes without
NumPy too: distributed imports it, where installed, only to allocate message buffers (it does without, with a
bytearray), and that import is ~0.15 s of CPU of every launch's start-up; ``share`` needs it (pandas). Nor does it
import ``isoduration`` (and with it ``arrow``, ~20 ms), which jsonschema would use to check the "duration"
format.

Every command of clowdr's own also parses YAML with libyaml where PyYAML has it: Dask, distributed, dask-jobqueue,
dask-cloudprovider and clowdr each read their defaults (and ~/.config/dask) through ``yaml.safe_load``, in pure
Python ~80 ms of each command's start; libyaml's safe loader reads the same files into the same values.
"""
from __future__ import annotations

import sys

UNUSED = ("rfc3987_syntax",)
UNUSED_BY_LAUNCHES = ("numpy", "isoduration")


def parse_yaml_in_c() -> None:
    """``yaml.safe_load`` through libyaml's safe loader, where PyYAML was built with it (same values, ~10x faster)."""
    import yaml

    if getattr(yaml, "__with_libyaml__", False):
        yaml.safe_load = _c_safe_load


def _c_safe_load(stream: object) -> object:
    import yaml

    return yaml.load(stream, Loader=yaml.CSafeLoader)


def skip_unused_imports(launch: bool = False) -> None:
    """Make the modules above unimportable here (jsonschema and distributed then do without them), unless already
    loaded; ``launch``: this process is a command-line launch."""
    for name in UNUSED + (UNUSED_BY_LAUNCHES if launch else ()):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
