package io.streamrec.jobs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.Test;

class UserInterestTest {
    static JobParams params() {
        JobParams p = new JobParams();
        p.recentItems = 3;
        p.maxSeenItems = 4;
        p.halfLifeHours = 1.0;
        p.flushIntervalMs = 100;
        p.shards = 4;
        p.topInterests = 2;
        p.forgetType = "forget";
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
