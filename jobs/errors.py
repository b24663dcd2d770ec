"""The streaming side's exception root.

A record that fails the event contract raises :class:`streamrec.events.InvalidRecordError` instead: the contract
is shared by the stream, the HTTP API and the trainer.
"""


class JobError(Exception):
    """Something the streaming side cannot do; the message says what to do."""
