package io.streamrec.jobs;

/** What decoding one record gives: an event, or a dead letter (the other field is null). A Flink POJO. */
public class Parsed {
    public Event event;
    public DeadLetter dead;

    public Parsed() {}

    /** Decode {@code value} with the contract; a failure becomes a dead letter carrying the record's context. */
    public static Parsed of(EventContract contract, String topic, int partition, long offset, long timestamp,
                            byte[] key, byte[] value, String[] headerKeys, byte[][] headerValues) {
        Parsed p = new Parsed();
        try {
            p.event = contract.parse(value == null ? new byte[0] : value, System.currentTimeMillis());
        } catch (EventContract.InvalidRecord e) {
            DeadLetter d = new DeadLetter();
            d.topic = topic;
            d.partition = partition;
            d.offset = offset;
            d.timestamp = timestamp;
            d.key = key;
            d.value = value;
            d.headerKeys = headerKeys;
            d.headerValues = headerValues;
            d.reason = e.getMessage();
            d.failedAt = System.currentTimeMillis();
            p.dead = d;
        }
        return p;
    }
}
