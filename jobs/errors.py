"""The streaming side's exception root."""


class JobError(Exception):
    """Something the streaming side cannot do; the message says what to do."""


class InvalidRecordError(JobError):
    """A record that fails validation: it goes to the dead-letter topic with this reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
