package io.streamrec.jobs;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.Header;
import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/** Decoding {@code events} records on the JVM: from Kafka (with the record's context), from bytes, and the split. */
public final class Decode {
    private Decode() {}

    /** The dead letters of {@link Split}. */
    public static final OutputTag<DeadLetter> DEAD_LETTERS = new OutputTag<>("dead-letters", TypeInformation.of(DeadLetter.class));

    /** Kafka records -> {@link Parsed}, keeping key, partition, offset, timestamp and headers for the dead letters. */
    public static final class FromKafka implements KafkaRecordDeserializationSchema<Parsed> {
        private static final long serialVersionUID = 1L;
        private final boolean items;
        private transient EventContract contract;

        public FromKafka(boolean items) {
            this.items = items;
        }

        @Override
        public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Parsed> out) {
            if (contract == null) {
                contract = EventContract.load();
            }
            Header[] headers = record.headers().toArray();
            String[] keys = new String[headers.length];
            byte[][] values = new byte[headers.length][];
            for (int i = 0; i < headers.length; i++) {
                keys[i] = headers[i].key();
                values[i] = headers[i].value();
            }
            out.collect(Parsed.of(contract, items, record.topic(), record.partition(), record.offset(),
                    record.timestamp(), record.key(), record.value(), keys, values));
        }

        @Override
        public TypeInformation<Parsed> getProducedType() {
            return TypeInformation.of(Parsed.class);
        }
    }

    /** Raw record bytes (the test doubles' source) -> {@link Parsed}, without Kafka context. */
    public static final class FromBytes extends RichMapFunction<byte[], Parsed> {
        private static final long serialVersionUID = 1L;
        private final String topic;
        private final boolean items;
        private transient EventContract contract;

        public FromBytes(String topic, boolean items) {
            this.topic = topic;
            this.items = items;
        }

        @Override
        public void open(OpenContext context) {
            contract = EventContract.load();
        }

        @Override
        public Parsed map(byte[] value) {
            return Parsed.of(contract, items, topic, -1, -1, -1, null, value, new String[0], new byte[0][]);
        }
    }

    /** Events on, dead letters to {@link #DEAD_LETTERS}; counts both (metrics {@code events_valid}, {@code events_dead}). */
    public static final class Split extends ProcessFunction<Parsed, Event> {
        private static final long serialVersionUID = 1L;
        private transient Counter valid;
        private transient Counter dead;

        @Override
        public void open(OpenContext context) {
            valid = getRuntimeContext().getMetricGroup().counter("events_valid");
            dead = getRuntimeContext().getMetricGroup().counter("events_dead");
        }

        @Override
        public void processElement(Parsed p, Context ctx, Collector<Event> out) {
            if (p.event != null) {
                valid.inc();
                out.collect(p.event);
            } else {
                dead.inc();
                ctx.output(DEAD_LETTERS, p.dead);
            }
        }
    }

    /** Items records on (their original bytes), dead letters to {@link #DEAD_LETTERS}. */
    public static final class SplitItems extends ProcessFunction<Parsed, byte[]> {
        private static final long serialVersionUID = 1L;

        @Override
        public void processElement(Parsed p, Context ctx, Collector<byte[]> out) {
            if (p.item != null) {
                out.collect(p.item);
            } else {
                ctx.output(DEAD_LETTERS, p.dead);
            }
        }
    }

    /** Every valid item on one key: the catalog's batches (items are few next to events). */
    public static final class OneShard implements KeySelector<byte[], Integer> {
        private static final long serialVersionUID = 1L;

        @Override
        public Integer getKey(byte[] item) {
            return 0;
        }
    }

    /** An item as the batcher's input (shard 0). */
    public static final class AsRecord implements org.apache.flink.api.common.functions.MapFunction<byte[], Tuple2<Integer, byte[]>> {
        private static final long serialVersionUID = 1L;

        @Override
        public Tuple2<Integer, byte[]> map(byte[] item) {  // the batcher's layout: length, record, no commands
            byte[] out = new byte[4 + item.length];
            java.nio.ByteBuffer.wrap(out).putInt(item.length).put(item);
            return Tuple2.of(0, out);
        }
    }

    /** A dead letter -> its envelope bytes (what tests collect; Kafka gets {@link DeadLetterSink}'s record). */
    public static final class Envelope extends RichMapFunction<DeadLetter, byte[]> {
        private static final long serialVersionUID = 1L;
        private final int maxReasonChars;

        public Envelope(int maxReasonChars) {
            this.maxReasonChars = maxReasonChars;
        }

        @Override
        public byte[] map(DeadLetter d) {
            return d.envelope(maxReasonChars);
        }
    }

    /** Events keyed by user. */
    public static final class ByUser implements KeySelector<Event, String> {
        private static final long serialVersionUID = 1L;

        @Override
        public String getKey(Event e) {
            return e.userId;
        }
    }

    /** User records keyed by writer shard. */
    public static final class ByShard implements KeySelector<Tuple2<Integer, byte[]>, Integer> {
        private static final long serialVersionUID = 1L;

        @Override
        public Integer getKey(Tuple2<Integer, byte[]> t) {
            return t.f0;
        }
    }

    // Factories for the Python wiring (py4j reaches top-level classes and static methods most simply).
    public static FromKafka kafkaDeserializer(boolean items) {
        return new FromKafka(items);
    }

    public static FromBytes fromBytes(String topic, boolean items) {
        return new FromBytes(topic, items);
    }

    public static SplitItems splitItems() {
        return new SplitItems();
    }

    public static AsRecord asRecord() {
        return new AsRecord();
    }

    public static Split split() {
        return new Split();
    }

    public static Envelope envelope(int maxReasonChars) {
        return new Envelope(maxReasonChars);
    }

    public static ByUser byUser() {
        return new ByUser();
    }

    public static ByShard byShard() {
        return new ByShard();
    }

    public static TypeInformation<Parsed> parsedType() {
        return TypeInformation.of(Parsed.class);
    }

    public static TypeInformation<Event> eventType() {
        return TypeInformation.of(Event.class);
    }

    public static TypeInformation<Tuple2<Integer, byte[]>> userRecordType() {
        return Types.TUPLE(Types.INT, PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    }

    public static TypeInformation<byte[]> bytesType() {
        return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
    }
}
