"""What clowdr's own processes (the CLI, Dask workers) need not import.

jsonschema imports ``rfc3987_syntax``, when it is installed (``jsonschema[format-nongpl]``, which Jupyter
brings), to check the "iri" string format; importing it compiles some forty grammars: about a second in every
process that validates a descriptor or builds a command line. Neither Boutiques nor clowdr checks formats (no
FormatChecker), so clowdr's own processes go without it. A user's interpreter (``import clowdr`` in a
notebook) is left alone.
"""
from __future__ import annotations

import sys

UNUSED = ("rfc3987_syntax",)


def skip_unused_imports() -> None:
    """Make the modules above unimportable here (jsonschema then does without them), unless already loaded."""
    for name in UNUSED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
