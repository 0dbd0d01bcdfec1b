"""What application code imports to queue texts and documents, delete them and search them.

Stays light: it talks to Redis only and never imports model2vec or pymilvus.
"""

from embedq.config.contract import Document, Hit
from embedq.config.jobs import JobStatus
from embedq.producer.job import Job
from embedq.producer.producer import EmbeddingProducer, Record

__all__ = ["Document", "EmbeddingProducer", "Hit", "Job", "JobStatus", "Record"]
