"""The streaming side: events in, user interest state, batched scoring, Redis out."""

from jobs.errors import InvalidRecordError, JobError
from jobs.events import Event, parse_event
from jobs.interest import build_interest_job

__all__ = ["Event", "InvalidRecordError", "JobError", "build_interest_job", "parse_event"]
