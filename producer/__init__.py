"""What application code imports to queue texts and search them.

Stays light: it talks to Redis only and never imports model2vec or pymilvus.
"""

from config.contract import Hit
from config.jobs import JobStatus
from producer.job import Job
from producer.producer import EmbeddingProducer, Record

__all__ = ["EmbeddingProducer", "Hit", "Job", "JobStatus", "Record"]
