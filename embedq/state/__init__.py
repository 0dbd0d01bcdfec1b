"""What embedq keeps in Redis besides its queues, written by workers and read by producers and
operators: job progress (:mod:`.jobs`), dead letters (:mod:`.deadletters`), the collection
registry (:mod:`.registry`) and the document version register (:mod:`.versions`).

Their key names are in :mod:`embedq.config.keys`.
"""
