package io.streamrec.jobs;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.util.Collector;

/**
 * One batch's newline-separated audit lines (the Python writer's output) -> one audit record per user written.
 *
 * <p>A line {@code {"written_at": ms, "written": [[user, events], ...]}} stands for the state writes of a batch
 * (Python says it once per batch, the JVM expands it): each becomes {@code {"user_id", "events", "items": [],
 * "scores": [], "model_version": "", "ts", "written_at", "scored": false}}. Any other line is one record already.
 */
public final class SplitLines implements FlatMapFunction<byte[], byte[]> {
    private static final long serialVersionUID = 1L;
    private static final byte[] STATE_WRITES = "{\"written_at\":".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final JsonFactory JSON = new JsonFactory();

    @Override
    public void flatMap(byte[] batch, Collector<byte[]> out) throws IOException {
        int start = 0;
        for (int i = 0; i <= batch.length; i++) {
            if (i == batch.length || batch[i] == '\n') {
                if (i > start) {
                    byte[] line = new byte[i - start];
                    System.arraycopy(batch, start, line, 0, line.length);
                    if (startsWith(line, STATE_WRITES)) {
                        expand(MAPPER.readTree(line), out);
                    } else {
                        out.collect(line);
                    }
                }
                start = i + 1;
            }
        }
    }

    private static boolean startsWith(byte[] line, byte[] prefix) {
        if (line.length < prefix.length) {
            return false;
        }
        for (int i = 0; i < prefix.length; i++) {
            if (line[i] != prefix[i]) {
                return false;
            }
        }
        return true;
    }

    private static void expand(JsonNode writes, Collector<byte[]> out) {
        long at = writes.get("written_at").asLong();
        for (JsonNode w : writes.get("written")) {
            ByteArrayOutputStream buf = new ByteArrayOutputStream(128);
            try (JsonGenerator g = JSON.createGenerator(buf)) {
                g.writeStartObject();
                g.writeStringField("user_id", w.get(0).asText());
                g.writeNumberField("events", w.get(1).asLong());
                g.writeArrayFieldStart("items");
                g.writeEndArray();
                g.writeArrayFieldStart("scores");
                g.writeEndArray();
                g.writeStringField("model_version", "");
                g.writeNumberField("ts", at);
                g.writeNumberField("written_at", at);
                g.writeBooleanField("scored", false);
                g.writeEndObject();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            out.collect(buf.toByteArray());
        }
    }
}
