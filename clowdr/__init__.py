"""clowdr: run a Boutiques tool over many invocations, anywhere Dask runs, with a complete provenance record."""
__version__ = "1.0.0.dev0"
