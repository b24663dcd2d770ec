"""The streaming side: events in, user interest state, batched scoring, Redis out.

The job itself is ``jobs.interest`` (it imports PyFlink); this package's top level stays light for producers.
The records it reads and writes are the event contract, :mod:`streamrec.events`.
"""

from jobs.errors import JobError
from jobs.producer import EventProducer

__all__ = ["EventProducer", "JobError"]
