package io.streamrec.jobs;

/**
 * One validated {@code events} record (a Flink POJO: public fields, no-arg constructor): an action, or a forget or
 * impression control record ({@code itemId} empty). {@code scenario} null: the default. The impression fields are
 * null on every other record: an action carries no list, and a shared empty array would be one more field copy.
 */
public class Event {
    public String userId;
    public String itemId;
    public String type;
    public long ts;
    public Double value;
    public String scenario;
    public String eventId;
    // An impression's items in the order shown, and the model version and A/B arm that produced the list.
    public String[] items;
    public String modelVersion;
    public String arm;

    public Event() {}
}
