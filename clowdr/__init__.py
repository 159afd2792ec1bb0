"""clowdr: run a Boutiques tool over many invocations, anywhere Dask runs, with a complete provenance record."""
__version__ = "1.0.0.dev0"


def launch(descriptor: str, invocation: str, provdir: str, **options: object) -> "object":
    """Start a run in the background and return its handle (see ``clowdr.handle``); imported lazily."""
    from clowdr.handle import launch as start

    return start(descriptor, invocation, provdir, **options)
