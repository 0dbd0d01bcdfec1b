"""embedq: an asynchronous, queue-based embedding worker.

One import namespace for everything embedq installs:

- :mod:`embedq.config`: settings, model definitions, the message contract, Celery
  configuration, the error tree and the Redis key names; shared by both sides.
- :mod:`embedq.producer`: what application code imports to queue, delete and search; talks to
  Redis only.
- :mod:`embedq.worker`: the Celery app (``celery -A embedq.worker worker``), the encoder, the
  vector store and the tasks.
- :mod:`embedq.cli`: the ``embedq`` command, an operator layer above both sides.

Importing this package imports none of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("embedq")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
