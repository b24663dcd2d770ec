"""Training data: the shipped data sets, the event log read back from Kafka, user timelines and the splits."""
