"""embedq's benchmark: the limit (raw encode, raw upsert), the in-process path (encode, then
insert by hand) and embedq end to end, on the same machine, model, Milvus and texts, in one run.

``python -m bench`` (``make bench``) writes bench/results/latest.json and latest.png;
``python -m bench --quick`` is a tiny run that checks every part works.
"""
