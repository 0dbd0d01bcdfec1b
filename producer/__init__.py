"""What application code imports to queue texts and documents, delete them and search them.

Stays light: it talks to Redis only and never imports model2vec or pymilvus.
"""

from config.contract import Document, Hit
from config.jobs import JobStatus
from producer.job import Job
from producer.producer import EmbeddingProducer, Record

__all__ = ["Document", "EmbeddingProducer", "Hit", "Job", "JobStatus", "Record"]
