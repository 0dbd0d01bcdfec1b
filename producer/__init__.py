"""What application code imports to queue texts and documents, delete them and search them.

Stays light: it talks to Redis only and never imports model2vec or pymilvus.
"""

from embedq.config.contract import Document, Hit
from embedq.producer.job import Job
from embedq.producer.producer import EmbeddingProducer, Record
from embedq.state.jobs import JobStatus

__all__ = ["Document", "EmbeddingProducer", "Hit", "Job", "JobStatus", "Record"]
