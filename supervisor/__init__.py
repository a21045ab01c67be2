"""spctl: the supervisor core, its control socket, configuration and command line."""

__version__ = "0.1.0"
