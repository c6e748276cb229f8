"""Defaults of the HTTP service that the command line shows in ``vpeft serve --help`` (kept apart
from `vpeft.serve.app`, which imports torch)."""

#: default upload limit (bytes)
MAX_UPLOAD = 10 * 1024 * 1024
