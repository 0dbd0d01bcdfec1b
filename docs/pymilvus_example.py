"""The Model2Vec example of pymilvus's page (Milvus docs, "Model2Vec" embedding functions), on
embedq.

Two changes from the page: the import line, and ``model_source`` points at the model shipped
with embedq so that the example runs on a host without the Hugging Face hub. On a host that can
reach the hub, or whose Hugging Face cache already holds it, ``"minishlab/potion-base-8M"`` (the
page's value and the default) works the same; so does a local folder such as
``"/path/to/local/model"``.

Run: .venv/bin/python docs/pymilvus_example.py
"""

from embedq.worker.embedding import Model2VecEmbeddingFunction

model2vec_ef = Model2VecEmbeddingFunction(
    model_source="bundled",  # or 'minishlab/potion-base-8M', or a local directory
)

docs = [
    "Artificial intelligence was founded as an academic discipline in 1956.",
    "Alan Turing was the first person to conduct substantial research in AI.",
    "Born in Maida Vale, London, Turing was raised in southern England.",
]

docs_embeddings = model2vec_ef.encode_documents(docs)

# Print embeddings
print("Embeddings:", docs_embeddings)
# Print dimension and shape of embeddings
print("Dim:", model2vec_ef.dim, docs_embeddings[0].shape)

queries = ["When was artificial intelligence founded", "Where was Alan Turing born?"]

query_embeddings = model2vec_ef.encode_queries(queries)

# Print embeddings
print("Embeddings:", query_embeddings)
# Print dimension and shape of embeddings
print("Dim:", model2vec_ef.dim, query_embeddings[0].shape)
