"""The HTTP server (app, routes, schemas, batcher, streams, auth, metrics, the page). It imports
media and the runtime only: no torch, no models, no export. The `sttm` command is `cli`."""

__version__ = "0.1.0"
