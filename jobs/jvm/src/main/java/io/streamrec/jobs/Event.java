package io.streamrec.jobs;

/** One validated event (a Flink POJO: public fields, no-arg constructor). {@code scenario} null: the default. */
public class Event {
    public String userId;
    public String itemId;
    public String type;
    public long ts;
    public Double value;
    public String scenario;
    public String eventId;

    public Event() {}
}
