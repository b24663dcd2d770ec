package io.streamrec.jobs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

import org.apache.flink.api.common.serialization.SerializerConfig;
import org.apache.flink.api.common.serialization.SerializerConfigImpl;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.api.java.typeutils.TypeExtractor;
import org.apache.flink.api.java.typeutils.runtime.PojoSerializer;
import org.apache.flink.core.memory.DataInputDeserializer;
import org.apache.flink.core.memory.DataOutputSerializer;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

class UserInterestTest {
    static JobParams params() {
        JobParams p = new JobParams();
        p.recentItems = 3;
        p.maxSeenItems = 4;
        p.maxShownItems = 3;
        p.halfLifeHours = 1.0;
        p.flushIntervalMs = 100;
        p.shards = 4;
        p.topInterests = 2;
        p.forgetType = "forget";
        p.impressionType = "impression";
        p.userKeyPrefix = "user:";
        p.recKeyPrefix = "rec:";
        p.interestDecimals = 4;
        p.defaultScenario = "default";
        p.ratingMidpoint = 2.5;
        p.typeWeights = Map.of("view", 1.0, "click", 2.0, "skip", -1.0);
        return p;
    }

    static Event ev(String item, String type, long ts) {
        Event e = new Event();
        e.userId = "u1";
        e.itemId = item;
        e.type = type;
        e.ts = ts;
        return e;
    }

    static Event shown(long ts, String version, String arm, String... items) {
        Event e = ev("", "impression", ts);
        e.items = items;
        e.modelVersion = version;
        e.arm = arm;
        return e;
    }

    static Map<String, Integer> shownMap(UserState s) {
        Map<String, Integer> out = new java.util.LinkedHashMap<>();
        for (int i = 0; i < s.shownItems.length; i++) {
            out.put(s.shownItems[i], s.shownCounts[i]);
        }
        return out;
    }

    @Test
    void impressionsCountShownItemsUntilAnActionAndAreNoActions() {
        UserInterest job = new UserInterest(params());
        UserState s = new UserState("u1");
        s = job.step(s, shown(5, "v1", "exp:a", "a", "b"), new String[0]);
        s = job.step(s, shown(6, null, null, "b", "c", "b"), new String[0]);  // b twice in one list: shown once
        assertEquals(Map.of("a", 1, "b", 2, "c", 1), shownMap(s));
        assertEquals(List.of("a", "b", "c"), List.of(s.shownItems));  // least recently shown first
        assertEquals(2, s.impressions);
        // Not an action: nothing of the action state moves.
        assertEquals(0, s.events);
        assertEquals(0, s.lastTs);
        assertEquals(0, s.recentItems.length + s.seen.length + s.facets.length + s.pendingItems.length);
        job.step(s, ev("b", "click", 7), new String[0]);  // acted on: its count goes
        job.step(s, ev("c", "skip", 8), new String[0]);  // a skip is no action: c stays shown
        job.step(s, ev("z", "view", 9), new String[0]);  // an item never shown: nothing to remove
        assertEquals(Map.of("a", 1, "c", 1), shownMap(s));
        assertEquals(3, s.events);
        assertEquals(2, s.impressions);
    }

    @Test
    void shownCountsAreCappedDroppingTheLeastRecentlyShown() {
        UserInterest job = new UserInterest(params());  // maxShownItems 3
        UserState s = new UserState("u1");
        job.step(s, shown(1, null, null, "a", "b", "c"), new String[0]);
        job.step(s, shown(2, null, null, "d"), new String[0]);
        assertEquals(List.of("b", "c", "d"), List.of(s.shownItems));
        job.step(s, shown(3, null, null, "b"), new String[0]);  // shown again: the most recent now
        assertEquals(List.of("c", "d", "b"), List.of(s.shownItems));
        assertEquals(2, s.shown("b"));
        job.step(s, shown(4, null, null, "e", "f", "g", "h"), new String[0]);  // a list longer than the cap
        assertEquals(List.of("f", "g", "h"), List.of(s.shownItems));
        assertEquals(0, s.shown("b"));
    }

    @Test
    void theFlushRecordCarriesShownCountsAndTheImpressionsSinceTheLastFlush() throws Exception {
        UserInterest job = new UserInterest(params());
        ObjectMapper mapper = new ObjectMapper();
        UserState s = new UserState("u1");
        JsonNode plain = mapper.readTree(UserInterest.encode(s));
        assertNull(plain.get("i"));  // only when non-empty
        assertNull(plain.get("m"));
        job.step(s, shown(5, "v1", "exp:a", "a", "b"), new String[0]);
        Event web = shown(6, null, null, "b");
        web.scenario = "web";
        job.step(s, web, new String[0]);
        JsonNode r = mapper.readTree(UserInterest.encode(s));
        assertEquals("{\"a\":[1,5],\"b\":[2,6]}", r.get("i").asText());  // [count, last shown], inside a string
        assertEquals("[[\"v1\",\"exp:a\",\"default\",2],[\"\",\"\",\"web\",1]]", r.get("m").toString());
        assertEquals(0, r.get("n").asInt());
        assertEquals("[]", r.get("a").toString());
        s.clearPending();  // the flush: the impressions were reported, the counts stay
        r = mapper.readTree(UserInterest.encode(s));
        assertNull(r.get("m"));
        assertEquals("{\"a\":[1,5],\"b\":[2,6]}", r.get("i").asText());
    }

    @Test
    void aForgetClearsTheShownCountsAndOnlyAForgottenStateHoldsNothing() {
        UserInterest job = new UserInterest(params());
        UserState s = new UserState("u1");
        s = job.step(s, shown(1, null, null, "a"), new String[0]);
        assertFalse(UserInterest.holdsNothing(s));  // shown lists, never acted: the state stays
        s = job.step(s, ev("b", "view", 2), new String[0]);
        s = job.step(s, ev("", "forget", 3), new String[0]);
        assertTrue(s.forgotten);
        assertEquals(0, s.shownItems.length + s.pendingShownSizes.length);
        assertEquals(0, s.impressions);
        assertTrue(UserInterest.holdsNothing(s));
        s = job.step(s, shown(4, null, null, "c"), new String[0]);  // shown again after the forget
        assertFalse(UserInterest.holdsNothing(s));
        assertTrue(s.forgotten);
        assertEquals(List.of("c"), List.of(s.shownItems));
    }

    @Test
    void theUserHashCarriesTheImpressionsTotalOnceThereAreAny() {
        JobParams p = params();
        UserInterest job = new UserInterest(p);
        UserState s = new UserState("u1");
        job.step(s, shown(1, null, null, "a"), new String[0]);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertEquals(0, RedisCommands.encode(s, RedisCommands.top(s, 2), p, out));  // no action yet: no HSET
        job.step(s, ev("b", "view", 2), new String[0]);
        out.reset();
        assertEquals(1, RedisCommands.encode(s, RedisCommands.top(s, 2), p, out));
        String resp = out.toString(StandardCharsets.UTF_8);
        assertTrue(resp.startsWith("*12\r\n$4\r\nHSET\r\n"), resp);
        assertTrue(resp.endsWith("$11\r\nimpressions\r\n$1\r\n1\r\n"), resp);
        UserState actionsOnly = new UserState("u2");
        job.step(actionsOnly, ev("b", "view", 2), new String[0]);
        out.reset();
        RedisCommands.encode(actionsOnly, RedisCommands.top(actionsOnly, 2), p, out);
        assertTrue(out.toString(StandardCharsets.UTF_8).startsWith("*10\r\n"));
        assertFalse(out.toString(StandardCharsets.UTF_8).contains("impressions"));
    }

    /** The fields UserState had before impressions: what a savepoint of that version holds. */
    static final String[] FIELDS_BEFORE_IMPRESSIONS = {"userId", "events", "lastTs", "recentTs", "recentItems",
        "recentScenarios", "seen", "facets", "weights", "interestsTs", "pendingItems", "pendingScenarios", "eventIds",
        "eventTimes", "forgotten", "dirty"};

    @Test
    void aStateOfTheVersionBeforeImpressionsRestoresWithTheNewFieldsDefaults() throws Exception {
        // A savepoint holds the serializer's snapshot and the state it wrote: here the POJO serializer of the
        // older field set, then its bytes. Restoring goes the way Flink's backends go: the new serializer judges
        // the old snapshot (fields added: compatible after migration), and the old snapshot's serializer reads.
        SerializerConfig config = new SerializerConfigImpl();
        Field[] fields = new Field[FIELDS_BEFORE_IMPRESSIONS.length];
        TypeSerializer<?>[] serializers = new TypeSerializer<?>[fields.length];
        for (int i = 0; i < fields.length; i++) {
            fields[i] = UserState.class.getField(FIELDS_BEFORE_IMPRESSIONS[i]);
            serializers[i] = TypeExtractor.getForClass(fields[i].getType()).createSerializer(config);
        }
        PojoSerializer<UserState> before = new PojoSerializer<>(UserState.class, serializers, fields, config);
        UserInterest job = new UserInterest(params());
        UserState old = new UserState("u1");
        job.step(old, ev("a", "click", 5), new String[] {"category:Drama"});
        DataOutputSerializer out = new DataOutputSerializer(256);
        TypeSerializerSnapshot.writeVersionedSnapshot(out, before.snapshotConfiguration());
        before.serialize(old, out);

        DataInputDeserializer in = new DataInputDeserializer(out.getCopyOfBuffer());
        TypeSerializerSnapshot<UserState> snapshot = TypeSerializerSnapshot.readVersionedSnapshot(in, getClass().getClassLoader());
        TypeSerializer<UserState> now = TypeInformation.of(UserState.class).createSerializer(config);
        assertTrue(now.snapshotConfiguration().resolveSchemaCompatibility(snapshot).isCompatibleAfterMigration());
        UserState restored = snapshot.restoreSerializer().deserialize(in);
        assertEquals(1, restored.events);
        assertEquals(List.of("a"), List.of(restored.seen));
        assertEquals(0, restored.impressions);
        assertEquals(0, restored.shownItems.length + restored.shownCounts.length);
        assertEquals(0, restored.pendingShownVersions.length + restored.pendingShownSizes.length);
        // ... and the restored state takes impressions, then goes through the new serializer (checkpoints, copies).
        job.step(restored, shown(6, "v1", null, "b"), new String[0]);
        DataOutputSerializer again = new DataOutputSerializer(256);
        now.serialize(now.copy(restored), again);
        UserState back = now.deserialize(new DataInputDeserializer(again.getCopyOfBuffer()));
        assertEquals(List.of("b"), List.of(back.shownItems));
        assertEquals(1, back.impressions);
        assertEquals(1, back.events);
    }

    @Test
    void recentItemsStayInEventTimeOrderAndBounded() {
        UserInterest job = new UserInterest(params());
        UserState s = new UserState("u1");
        for (long[] e : new long[][] {{1, 10}, {2, 30}, {3, 20}, {4, 40}}) {
            job.apply(s, ev("i" + e[0], "view", e[1]), new String[0]);
        }
        assertEquals(List.of("i3", "i2", "i4"), List.of(s.recentItems));  // i1 fell out; i3 landed at its time
        assertEquals(4, s.events);
        assertEquals(40, s.lastTs);
    }

    @Test
    void seenIsCappedOldestFirstAndSkipsAreNotSeen() {
        UserInterest job = new UserInterest(params());
        UserState s = new UserState("u1");
        for (int i = 0; i < 6; i++) {
            job.apply(s, ev("i" + i, "view", i), new String[0]);
        }
        job.apply(s, ev("x", "skip", 7), new String[0]);
        assertEquals(List.of("i2", "i3", "i4", "i5"), List.of(s.seen));
        assertEquals(6, s.pendingItems.length);  // a skip is no action for the hit rate
    }

    @Test
    void interestsDecayByHalfLife() {
        UserInterest job = new UserInterest(params());
        UserState s = new UserState("u1");
        job.apply(s, ev("i1", "click", 0), new String[] {"category:Drama"});
        job.apply(s, ev("i2", "view", 3_600_000), new String[0]);
        assertEquals(2.0 * 0.5 + 1.0, s.interest("scenario:default"), 1e-12);
        assertEquals(1.0, s.interest("category:Drama"), 1e-12);
        job.apply(s, ev("i3", "view", 0), new String[0]);  // late: counts as decayed to now
        assertEquals(2.0 * 0.5 + 1.0 + 0.5, s.interest("scenario:default"), 1e-12);
    }

    @Test
    void encodeGivesTheWritersRecord() throws Exception {
        UserInterest job = new UserInterest(params());
        UserState s = new UserState("u1");
        job.apply(s, ev("i1", "click", 5), new String[] {"category:Drama", "category:Noir"});
        JsonNode r = new ObjectMapper().readTree(UserInterest.encode(s));
        assertEquals("u1", r.get("u").asText());
        assertEquals(1, r.get("n").asInt());
        assertEquals("[[5,\"i1\",\"default\"]]", r.get("r").asText());  // a JSON string holding the array
        assertEquals("[\"i1\"]", r.get("s").asText());
        assertEquals(2, RedisCommands.top(s, 2).size());  // top 2 of 3 facets
        assertEquals("[[\"i1\",\"default\"]]", r.get("a").toString());
        assertTrue(r.get("f") == null);
    }

    @Test
    void seenMovesARepeatToTheEndAndEventIdsExpire() {
        UserState s = new UserState("u1");
        for (String item : new String[] {"a", "b", "c", "a"}) {
            s.touchSeen(item, 10);
        }
        assertEquals(List.of("b", "c", "a"), List.of(s.seen));
        assertTrue(!s.seenEventId("e1", 0, 100, 2));
        assertTrue(s.seenEventId("e1", 50, 100, 2));  // within the TTL: a duplicate
        assertTrue(!s.seenEventId("e1", 200, 100, 2));  // expired: applied again
        assertTrue(!s.seenEventId("e2", 201, 100, 2));
        assertTrue(!s.seenEventId("e3", 202, 100, 2));  // at most 2 ids: e1 goes
        assertTrue(!s.seenEventId("e1", 203, 100, 2));
    }

    @Test
    void shardOfMatchesPythonsCrc32() {
        assertEquals((int) (2116437524L % 7), UserInterest.shardOf("user-1", 7));  // zlib.crc32(b"user-1")
        assertEquals(UserInterest.shardOf("ü", 4), UserInterest.shardOf(new String("ü".getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8), 4));
    }
}
