"""The HTTP daemon: front (waitress + Falcon), supervisor, inference and decoder processes."""
