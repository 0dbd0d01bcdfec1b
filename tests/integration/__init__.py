"""Tests against real Redis, Celery worker processes and Milvus, started by fixtures and
stopped after."""
