package io.streamrec.jobs;

/** What decoding one record gives: an event, or a dead letter (the other field is null). A Flink POJO. */
public class Parsed {
    public Event event;
    // An items record that passed: its original bytes (the catalog stages read its fields).
    public byte[] item;
    public DeadLetter dead;

    public Parsed() {}

    /** Decode {@code value} with the contract; a failure becomes a dead letter carrying the record's context. */
    public static Parsed of(EventContract contract, boolean items, String topic, int partition, long offset,
                            long timestamp, byte[] key, byte[] value, String[] headerKeys, byte[][] headerValues) {
        Parsed p = new Parsed();
        byte[] raw = value == null ? new byte[0] : value;
        try {
            if (items) {
                contract.parseItem(raw);
                p.item = raw;
            } else {
                p.event = contract.parse(raw, System.currentTimeMillis());
            }
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
