package io.streamrec.jobs;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.flink.kafka.shaded.org.apache.kafka.common.header.Header;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.util.Collector;
import org.junit.jupiter.api.Test;

class EventContractTest {
    static final long NOW = 1_700_000_000_000L;
    static final EventContract CONTRACT = EventContract.load();
    static final ObjectMapper MAPPER = new ObjectMapper();

    static byte[] b(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String reason(String record) {
        return assertThrows(EventContract.InvalidRecord.class, () -> CONTRACT.parse(b(record), NOW)).getMessage();
    }

    @Test
    void validEventsDecode() throws Exception {
        Event e = CONTRACT.parse(b("{\"user_id\":\"u1\",\"item_id\":\"i1\",\"type\":\"rating\",\"ts\":5,\"value\":4,"
                + "\"scenario\":\"web\",\"event_id\":\"e1\",\"extra\":[1]}"), NOW);
        assertEquals("u1", e.userId);
        assertEquals(4.0, e.value);
        assertEquals("web", e.scenario);
        assertEquals("e1", e.eventId);
        Event forget = CONTRACT.parse(b("{\"user_id\":\"u1\",\"type\":\"forget\",\"ts\":5}"), NOW);
        assertEquals("", forget.itemId);
        assertNull(forget.eventId);
    }

    @Test
    void badRecordsGiveThePythonReasons() {
        assertEquals("field 'user_id' must not be empty", reason("{\"user_id\":\"\\u3000\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":5}"));
        assertEquals("field 'user_id' contains control characters", reason("{\"user_id\":\"a\\u0085\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":5}"));
        assertEquals("field 'item_id' must be a string, got int", reason("{\"user_id\":\"u\",\"item_id\":1,\"type\":\"view\",\"ts\":5}"));
        assertEquals("field 'ts' must be an integer (epoch milliseconds)", reason("{\"user_id\":\"u\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":5.0}"));
        assertEquals("field 'ts' 1786400000001 is negative or more than a day in the future",
                reason("{\"user_id\":\"u\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":1786400000001}"));
        assertEquals("field 'value' must be a finite number", reason("{\"user_id\":\"u\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":5,\"value\":true}"));
        assertEquals("field 'event_id' must be a string, got NoneType", reason("{\"user_id\":\"u\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":5,\"event_id\":null}"));
        assertEquals("an event must be a JSON object, got list", reason("[]"));
        assertTrue(reason("{\"user_id\":\"u\"").startsWith("not JSON"));
        assertTrue(reason("NaN").startsWith("not JSON"));
        assertTrue(reason("{} {}").startsWith("not JSON"));
        assertTrue(reason("[".repeat(501) + "]".repeat(501)).startsWith("not JSON"));
        assertTrue(reason("{\"user_id\":\"u\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":5,\"x\":\"\\ud800\"}").contains("lone surrogate"));
        assertTrue(assertThrows(EventContract.InvalidRecord.class,
                () -> CONTRACT.parse(new byte[] {(byte) 0xed, (byte) 0xa0, (byte) 0x80}, NOW)).getMessage().startsWith("not UTF-8"));
        assertTrue(reason("x".repeat(70_000)).startsWith("record of 70000 bytes exceeds"));
    }

    static final String IMPRESSION = "{\"user_id\":\"u\",\"type\":\"impression\",\"ts\":5,";

    @Test
    void impressionsDecodeWithTheirItemsAndLabels() throws Exception {
        Event ev = CONTRACT.parse(b(IMPRESSION + "\"items\":[\"i1\",\"i2\"],\"model_version\":\"v3\",\"arm\":\"exp:b\","
                + "\"scenario\":\"web\",\"event_id\":\"e1\",\"context\":{}}"), NOW);
        assertEquals("impression", ev.type);
        assertEquals("", ev.itemId);
        assertArrayEquals(new String[] {"i1", "i2"}, ev.items);
        assertEquals("v3", ev.modelVersion);
        assertEquals("exp:b", ev.arm);
        assertEquals("web", ev.scenario);
        assertEquals("e1", ev.eventId);
        Event bare = CONTRACT.parse(b(IMPRESSION + "\"items\":[\"i1\"],\"arm\":null}"), NOW);
        assertNull(bare.modelVersion);
        assertNull(bare.arm);
        assertNull(CONTRACT.parse(b("{\"user_id\":\"u\",\"item_id\":\"i\",\"type\":\"view\",\"ts\":5}"), NOW).items);
    }

    @Test
    void badImpressionsGiveThePythonReasons() {
        String hundredAndOne = "\"i\"" + ",\"i\"".repeat(100);
        assertEquals("field 'items' must be a list of 1..100 item ids", reason(IMPRESSION + "\"items\":[]}"));
        assertEquals("field 'items' must be a list of 1..100 item ids", reason(IMPRESSION + "\"items\":\"i1\"}"));
        assertEquals("field 'items' must be a list of 1..100 item ids", reason(IMPRESSION.replace(",\"ts\":5,", "}")));
        assertEquals("field 'items' must be a list of 1..100 item ids", reason(IMPRESSION + "\"items\":[" + hundredAndOne + "]}"));
        assertEquals("field 'items[1]' must not be empty", reason(IMPRESSION + "\"items\":[\"a\",\" \"]}"));
        assertEquals("field 'items[0]' must be a string, got int", reason(IMPRESSION + "\"items\":[7]}"));
        assertEquals("field 'items[0]' contains control characters", reason(IMPRESSION + "\"items\":[\"a\\u0000\"]}"));
        assertEquals("field 'item_id' must be absent from an impression (its items go in 'items')",
                reason(IMPRESSION + "\"items\":[\"a\"],\"item_id\":\"a\"}"));
        assertEquals("field 'model_version' must be a non-empty string of <= 256 characters",
                reason(IMPRESSION + "\"items\":[\"a\"],\"model_version\":\"\"}"));
        assertEquals("field 'arm' must be a non-empty string of <= 256 characters",
                reason(IMPRESSION + "\"items\":[\"a\"],\"arm\":\"" + "x".repeat(257) + "\"}"));
        assertEquals("field 'user_id' must be a string, got NoneType", reason("{\"type\":\"impression\",\"items\":[\"a\"],\"ts\":5}"));
        assertEquals("field 'ts' must be an integer (epoch milliseconds)", reason("{\"user_id\":\"u\",\"type\":\"impression\",\"items\":[\"a\"]}"));
        assertTrue(reason("{\"user_id\":\"u\",\"item_id\":\"i\",\"type\":\"teleport\",\"ts\":5}")
                .startsWith("field 'type' must be one of ['cart', 'click', 'purchase', 'rating', 'skip', 'view'], 'forget' or 'impression', got "));
    }

    static String itemReason(String record) {
        return assertThrows(EventContract.InvalidRecord.class, () -> CONTRACT.parseItem(b(record))).getMessage();
    }

    @Test
    void itemsFollowTheItemRules() throws Exception {
        assertEquals("i1", CONTRACT.parseItem(b("{\"item_id\":\"i1\",\"title\":\"Heat\",\"categories\":false}")));
        assertEquals("field 'title' must be a non-empty string of <= 1024 characters",
                itemReason("{\"item_id\":\"i1\",\"title\":\" \\t\"}"));
        assertEquals("field 'categories' must be a list of non-empty strings",
                itemReason("{\"item_id\":\"i1\",\"title\":\"Heat\",\"categories\":[\"\"]}"));
        assertEquals("field 'ts' must be a non-negative integer (epoch milliseconds)",
                itemReason("{\"item_id\":\"i1\",\"title\":\"Heat\",\"ts\":-1}"));
        assertEquals("field 'attributes' must be a JSON object",
                itemReason("{\"item_id\":\"i1\",\"title\":\"Heat\",\"attributes\":[1]}"));
    }

    @Test
    void deadLettersKeepTheRecordsContext() throws Exception {
        Parsed p = Parsed.of(CONTRACT, false, "events", 3, 42, 1234, b("u1"), new byte[] {(byte) 0xff}, new String[] {"trace"},
                new byte[][] {b("t-1")});
        assertNull(p.event);
        JsonNode env = MAPPER.readTree(p.dead.envelope(500));
        assertEquals(3, env.get("partition").asInt());
        assertEquals(42, env.get("offset").asLong());
        assertEquals("u1", env.get("key").asText());
        assertArrayEquals(new byte[] {(byte) 0xff}, Base64.getDecoder().decode(env.get("original_b64").asText()));
        assertTrue(env.get("original") == null);  // not UTF-8: base64 only
        ProducerRecord<byte[], byte[]> rec = new DeadLetterSink("events.dlq", 500).serialize(p.dead, null, null);
        assertArrayEquals(b("u1"), rec.key());
        assertEquals(1234L, rec.timestamp());
        List<String> names = new ArrayList<>();
        for (Header h : rec.headers()) {
            names.add(h.key());
        }
        assertEquals(List.of("trace", "__connect.errors.topic", "__connect.errors.partition", "__connect.errors.offset",
                "__connect.errors.exception.message", "__connect.errors.stage"), names);
        assertArrayEquals(b("42"), rec.headers().lastHeader("__connect.errors.offset").value());
    }

    @Test
    void splitLinesSplitsOnNewlines() {
        List<String> out = new ArrayList<>();
        new SplitLines().flatMap(b("a\nbc\n\nd"), new Collector<>() {
            public void collect(byte[] r) {
                out.add(new String(r, StandardCharsets.UTF_8));
            }

            public void close() {}
        });
        assertEquals(List.of("a", "bc", "d"), out);
    }
}
