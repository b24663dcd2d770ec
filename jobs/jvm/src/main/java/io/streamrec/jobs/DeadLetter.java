package io.streamrec.jobs;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;

/**
 * A record that failed the contract, with everything an operator needs to trace and re-send it: the original
 * bytes, key, headers, and where it came from (topic, partition, offset, timestamp). A Flink POJO.
 */
public class DeadLetter {
    public String topic;
    public int partition = -1;
    public long offset = -1;
    public long timestamp = -1;
    public byte[] key;
    public byte[] value;
    public String[] headerKeys = new String[0];
    public byte[][] headerValues = new byte[0][];
    public String reason;
    public long failedAt;

    public DeadLetter() {}

    private static final JsonFactory JSON = new JsonFactory();

    static String utf8OrNull(byte[] raw) {
        if (raw == null) {
            return null;
        }
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(raw))
                    .toString();
        } catch (CharacterCodingException e) {
            return null;
        }
    }

    /**
     * The record's value on {@code events.dlq}: the envelope of {@code streamrec.events.dead_letter} (reason,
     * topic, original_b64, original when UTF-8, failed_at) plus partition, offset, timestamp and key.
     */
    public byte[] envelope(int maxReasonChars) {
        ByteArrayOutputStream out = new ByteArrayOutputStream(256 + (value == null ? 0 : value.length * 2));
        try (JsonGenerator g = JSON.createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("reason", reason.length() > maxReasonChars ? reason.substring(0, maxReasonChars) : reason);
            g.writeStringField("topic", topic);
            if (partition >= 0) {
                g.writeNumberField("partition", partition);
                g.writeNumberField("offset", offset);
            }
            if (timestamp >= 0) {
                g.writeNumberField("timestamp", timestamp);
            }
            if (key != null) {
                g.writeStringField("key_b64", Base64.getEncoder().encodeToString(key));
                String text = utf8OrNull(key);
                if (text != null) {
                    g.writeStringField("key", text);
                }
            }
            g.writeStringField("original_b64", Base64.getEncoder().encodeToString(value == null ? new byte[0] : value));
            g.writeNumberField("failed_at", failedAt);
            String text = utf8OrNull(value);
            if (text != null) {
                g.writeStringField("original", text);
            }
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out.toByteArray();
    }
}
