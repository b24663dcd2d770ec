"""The streaming side: events in, user interest state, batched scoring, Redis out.

The job itself is ``jobs.interest`` (it imports PyFlink); this package's top level stays light for producers.
"""

from jobs.errors import InvalidRecordError, JobError
from jobs.events import Event, Item, parse_event
from jobs.producer import EventProducer

__all__ = ["Event", "EventProducer", "InvalidRecordError", "Item", "JobError", "parse_event"]
