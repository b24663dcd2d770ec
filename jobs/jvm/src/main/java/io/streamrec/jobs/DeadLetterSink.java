package io.streamrec.jobs;

import java.nio.charset.StandardCharsets;

import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.internals.RecordHeaders;

/**
 * A dead letter as a Kafka record on {@code events.dlq}: the original key and headers, the envelope as the value,
 * and the context headers Kafka Connect's dead-letter queues use ({@code __connect.errors.*}), so that tools
 * that read those read ours.
 */
public final class DeadLetterSink implements KafkaRecordSerializationSchema<DeadLetter> {
    private static final long serialVersionUID = 1L;
    public static final String PREFIX = "__connect.errors.";
    private final String topic;
    private final int maxReasonChars;

    public DeadLetterSink(String topic, int maxReasonChars) {
        this.topic = topic;
        this.maxReasonChars = maxReasonChars;
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(DeadLetter d, KafkaSinkContext context, Long timestamp) {
        RecordHeaders headers = new RecordHeaders();
        for (int i = 0; i < d.headerKeys.length; i++) {
            headers.add(d.headerKeys[i], d.headerValues[i]);
        }
        headers.add(PREFIX + "topic", utf8(d.topic));
        headers.add(PREFIX + "partition", utf8(Integer.toString(d.partition)));
        headers.add(PREFIX + "offset", utf8(Long.toString(d.offset)));
        headers.add(PREFIX + "exception.message", utf8(d.reason));
        headers.add(PREFIX + "stage", utf8("VALUE_CONVERTER"));
        Long ts = d.timestamp >= 0 ? d.timestamp : null;
        return new ProducerRecord<>(topic, null, ts, d.key, d.envelope(maxReasonChars), headers);
    }
}
