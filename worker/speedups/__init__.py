"""The worker's speed-ups that reach into other libraries, in one place.

Each has a setting that turns it off, a test that the plain path gives the same result, and a
row in docs/dependencies.md saying what to check before raising the library's version bound:

- :mod:`.coalescer`: dynamic batching, taking waiting batches straight from kombu's queue lists
  (``EMBEDQ_WORKER__COALESCE_TEXTS=0``);
- :mod:`.upsert`: upsert requests built by column for pymilvus
  (``EMBEDQ_MILVUS__COLUMN_UPSERT=false``);
- :mod:`.wordcache`: token ids looked up by word, overriding ``StaticModel.tokenize``
  (``EMBEDQ_MODEL__WORD_CACHE=0``);
- :mod:`.lazypandas`: stand-ins for the pandas pymilvus imports, pyarrow kept out
  (``EMBEDQ_WORKER__LAZY_PANDAS=false``).

The transport's atomic take (embedq.state.broker, ``EMBEDQ_WORKER__ATOMIC_FETCH``) and the
Milvus Lite server's patches (embedq.stack.lite_server) reach into kombu and milvus-lite for
reliability rather than speed, and live with what they serve.
"""
