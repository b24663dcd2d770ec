package io.streamrec.jobs;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.ReadOnlyBroadcastState;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.metrics.Counter;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.streaming.api.functions.co.KeyedBroadcastProcessFunction;
import org.apache.flink.util.Collector;

/**
 * Keyed by user: apply each event to the user's state on the JVM, and once per flush interval emit the user's
 * state (one JSON record) for the writer's batch: a user who sent many events in an interval is written once.
 *
 * <p>The flush is a processing-time timer per user at the next multiple of the interval (Flink keeps one timer per
 * key and time, so a burst registers one); with bounded input (tests), an event-time timer at the end of input too.
 * The catalog arrives as broadcast state (item id -> its category facets), so interests decay per category as
 * well as per scenario.
 */
public class UserInterest extends KeyedBroadcastProcessFunction<String, Event, byte[], Tuple2<Integer, byte[]>> {
    // The output's bytes: [4-byte length of the JSON record][the JSON record][the user's Redis commands, RESP].
    private static final long serialVersionUID = 1L;
    public static final long END_OF_INPUT = Long.MAX_VALUE - 1;
    private static final double MS_PER_HOUR = 3_600_000.0;
    private static final ObjectMapper MAPPER = new ObjectMapper();
    private static final JsonFactory JSON = new JsonFactory();

    /** item id -> "category:X" facets. */
    public static final MapStateDescriptor<String, String[]> CATALOG =
            new MapStateDescriptor<>("catalog-facets", Types.STRING, TypeInformation.of(String[].class));

    private final JobParams p;
    private transient ValueState<UserState> state;
    private transient Counter duplicates;
    private transient Counter forgets;

    public UserInterest(JobParams params) {
        this.p = params;
    }

    @Override
    public void open(OpenContext context) {
        state = getRuntimeContext().getState(new ValueStateDescriptor<>("user", TypeInformation.of(UserState.class)));
        duplicates = getRuntimeContext().getMetricGroup().counter("events_duplicate");
        forgets = getRuntimeContext().getMetricGroup().counter("forgets");
    }

    /** Stable shard of a user: crc32 of the UTF-8 id, as {@code jobs.writer.shard_of}. */
    public static int shardOf(String userId, int shards) {
        CRC32 crc = new CRC32();
        crc.update(userId.getBytes(StandardCharsets.UTF_8));
        return (int) (crc.getValue() % shards);
    }

    @Override
    public void processElement(Event ev, ReadOnlyContext ctx, Collector<Tuple2<Integer, byte[]>> out) throws Exception {
        UserState s = state.value();
        if (s == null) {
            s = new UserState(ev.userId);
        }
        long now = ctx.timerService().currentProcessingTime();
        if (ev.eventId != null && isDuplicate(s, ev.eventId, now)) {
            duplicates.inc();
            return;
        }
        if (p.forgetType.equals(ev.type)) {
            forgets.inc();
        }
        boolean action = !p.forgetType.equals(ev.type) && !p.impressionType.equals(ev.type);
        s = step(s, ev, action ? facets(ev.itemId, ctx.getBroadcastState(CATALOG)) : new String[0]);
        s.dirty = true;
        state.update(s);
        ctx.timerService().registerProcessingTimeTimer((now / p.flushIntervalMs + 1) * p.flushIntervalMs);
        if (p.flushAtEndOfInput) {
            ctx.timerService().registerEventTimeTimer(END_OF_INPUT);
        }
    }

    private boolean isDuplicate(UserState s, String eventId, long now) {
        return s.seenEventId(eventId, now, p.dedupTtlMs, p.dedupMaxIds);
    }

    private static String[] facets(String itemId, ReadOnlyBroadcastState<String, String[]> catalog) throws Exception {
        String[] f = catalog.get(itemId);
        return f == null ? new String[0] : f;
    }

    double weight(Event ev) {
        if ("rating".equals(ev.type)) {
            return (ev.value != null ? ev.value : p.ratingMidpoint) - p.ratingMidpoint;
        }
        Double w = p.typeWeights.get(ev.type);
        return w == null ? 0.0 : w;
    }

    /**
     * One record of the user's, deduplicated already: the user's state after it. A forget gives a fresh state (the
     * right to be forgotten: everything the user did goes, shown counts included; the flush tells the writer to
     * delete), an impression and an action change {@code s} in place.
     */
    UserState step(UserState s, Event ev, String[] facets) {
        if (p.forgetType.equals(ev.type)) {
            UserState fresh = new UserState(ev.userId);
            fresh.forgotten = true;
            return fresh;
        }
        if (p.impressionType.equals(ev.type)) {
            applyImpression(s, ev);
        } else {
            apply(s, ev, facets);
        }
        return s;
    }

    /**
     * One impression applied in place: {@code jobs.state.apply_impression}. Not an action: events, recent, seen,
     * interests and the pending actions stay; the shown counts and the impressions total change.
     */
    void applyImpression(UserState s, Event ev) {
        s.impressions += 1;
        int distinct = s.show(ev.items, p.maxShownItems, ev.ts);
        s.addPendingShown(ev.modelVersion != null ? ev.modelVersion : "", ev.arm != null ? ev.arm : "",
                ev.scenario != null ? ev.scenario : p.defaultScenario, distinct);
    }

    /** One event applied in place: {@code jobs.state.apply_event}. Out-of-order events land at their time. */
    void apply(UserState s, Event ev, String[] facets) {
        s.events += 1;
        s.lastTs = Math.max(s.lastTs, ev.ts);
        String scenario = ev.scenario != null ? ev.scenario : p.defaultScenario;
        if (!"skip".equals(ev.type)) {
            s.unshow(ev.itemId);  // acted on: no longer shown without an action
            s.addPending(ev.itemId, scenario);
            insertRecent(s, ev.ts, ev.itemId, scenario);
            s.touchSeen(ev.itemId, p.maxSeenItems);
        }
        double halfLifeMs = p.halfLifeHours * MS_PER_HOUR;
        double w = weight(ev);
        if (ev.ts >= s.interestsTs) {
            s.decayInterests(Math.pow(0.5, (ev.ts - s.interestsTs) / halfLifeMs));
            s.interestsTs = ev.ts;
        } else {  // a late event counts as much as it would have decayed to by now
            w *= Math.pow(0.5, (s.interestsTs - ev.ts) / halfLifeMs);
        }
        s.addInterest("scenario:" + scenario, w);
        for (String f : facets) {
            s.addInterest(f, w);
        }
    }

    private void insertRecent(UserState s, long ts, String item, String scenario) {
        int n = s.recentTs.length;
        int at = n;  // after every entry with time <= ts (bisect.insort_right)
        while (at > 0 && s.recentTs[at - 1] > ts) {
            at--;
        }
        int keepFrom = Math.max(0, n + 1 - p.recentItems);
        int size = n + 1 - keepFrom;
        long[] t = new long[size];
        String[] it = new String[size];
        String[] sc = new String[size];
        int j = 0;
        for (int i = 0; i <= n; i++) {
            long ti;
            String ii;
            String si;
            if (i < at) {
                ti = s.recentTs[i]; ii = s.recentItems[i]; si = s.recentScenarios[i];
            } else if (i == at) {
                ti = ts; ii = item; si = scenario;
            } else {
                ti = s.recentTs[i - 1]; ii = s.recentItems[i - 1]; si = s.recentScenarios[i - 1];
            }
            if (i >= keepFrom) {
                t[j] = ti; it[j] = ii; sc[j] = si;
                j++;
            }
        }
        s.recentTs = t;
        s.recentItems = it;
        s.recentScenarios = sc;
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<Tuple2<Integer, byte[]>> out) throws Exception {
        UserState s = state.value();
        if (s == null || !s.dirty) {
            return;
        }
        out.collect(Tuple2.of(shardOf(s.userId, p.shards), flushRecord(s, p)));
        if (holdsNothing(s)) {  // forgotten, and nothing since: no state is kept at all
            state.clear();
            return;
        }
        s.clearPending();
        s.forgotten = false;
        s.dirty = false;
        state.update(s);
    }

    /**
     * Whether the state holds nothing of the user's: only a forget gives such a state (a fresh one), and only until
     * the user's next action or impression. A user who was shown lists but never acted has {@code events == 0} and
     * keeps their state.
     */
    static boolean holdsNothing(UserState s) {
        return s.events == 0 && s.impressions == 0;
    }

    /** The record and the Redis commands of one user's flush, in the layout the {@link Batcher} reads. */
    static byte[] flushRecord(UserState s, JobParams p) {
        byte[] json = encode(s);
        ByteArrayOutputStream out = new ByteArrayOutputStream(json.length + 256);
        out.writeBytes(java.nio.ByteBuffer.allocate(4).putInt(json.length).array());
        out.writeBytes(json);
        RedisCommands.encode(s, RedisCommands.top(s, p.topInterests), p, out);
        return out.toByteArray();
    }

    /**
     * The user's record for the writer: {@code {"u", "n" (events), "r", "s", "a" ([item, scenario] of the actions
     * since the last flush), "i", "m", "f" (forgotten)}}. {@code "r"} (recent {@code [ts, item, scenario]}, oldest
     * first) and {@code "s"} (seen items) are JSON arrays inside a JSON string: the writer decodes them only for the
     * users it scores, and a string is read much faster than a list of strings (a heavy user's seen list is
     * thousands). Only when non-empty: {@code "i"}, a JSON object inside a JSON string likewise, {@code {item: [times
     * shown without an action since, the latest event time it was shown at]}}, least recently shown first; {@code "m"}, the impressions since the last
     * flush, each {@code [model version or "", arm or "", scenario, distinct items]}.
     */
    static byte[] encode(UserState s) {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(256 + 24 * (s.recentTs.length + s.seen.length));
        try (JsonGenerator g = JSON.createGenerator(buf)) {
            g.writeStartObject();
            g.writeStringField("u", s.userId);
            g.writeNumberField("n", s.events);
            g.writeStringField("r", recentJson(s));
            g.writeStringField("s", strings(s.seen));
            g.writeArrayFieldStart("a");
            for (int i = 0; i < s.pendingItems.length; i++) {
                g.writeStartArray();
                g.writeString(s.pendingItems[i]);
                g.writeString(s.pendingScenarios[i]);
                g.writeEndArray();
            }
            g.writeEndArray();
            if (s.shownItems.length > 0) {
                g.writeStringField("i", shownJson(s));
            }
            if (s.pendingShownSizes.length > 0) {
                g.writeArrayFieldStart("m");
                for (int i = 0; i < s.pendingShownSizes.length; i++) {
                    g.writeStartArray();
                    g.writeString(s.pendingShownVersions[i]);
                    g.writeString(s.pendingShownArms[i]);
                    g.writeString(s.pendingShownScenarios[i]);
                    g.writeNumber(s.pendingShownSizes[i]);
                    g.writeEndArray();
                }
                g.writeEndArray();
            }
            if (s.forgotten) {
                g.writeBooleanField("f", true);
            }
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return buf.toByteArray();
    }

    /** The shown counts as a JSON object's text, {@code {item: [count, last shown ts]}}, least recently shown first. */
    static String shownJson(UserState s) {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(16 * s.shownItems.length + 2);
        try (JsonGenerator g = JSON.createGenerator(buf)) {
            g.writeStartObject();
            for (int i = 0; i < s.shownItems.length; i++) {
                g.writeArrayFieldStart(s.shownItems[i]);
                g.writeNumber(s.shownCounts[i]);
                g.writeNumber(i < s.shownTs.length ? s.shownTs[i] : 0L);
                g.writeEndArray();
            }
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return buf.toString(StandardCharsets.UTF_8);
    }

    static String recentJson(UserState s) {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(32 * s.recentTs.length + 2);
        try (JsonGenerator g = JSON.createGenerator(buf)) {
            g.writeStartArray();
            for (int i = 0; i < s.recentTs.length; i++) {
                g.writeStartArray();
                g.writeNumber(s.recentTs[i]);
                g.writeString(s.recentItems[i]);
                g.writeString(s.recentScenarios[i]);
                g.writeEndArray();
            }
            g.writeEndArray();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return buf.toString(StandardCharsets.UTF_8);
    }

    /** A JSON array of strings, as text (the seen items here; the recent items of {@link RedisCommands}). */
    static String strings(String[] values) {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(12 * values.length + 2);
        try (JsonGenerator g = JSON.createGenerator(buf)) {
            g.writeStartArray();
            for (String v : values) {
                g.writeString(v);
            }
            g.writeEndArray();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return buf.toString(StandardCharsets.UTF_8);
    }

    /** A valid {@code items} record (its original JSON): {@code item_id} and its {@code categories}. */
    @Override
    public void processBroadcastElement(byte[] item, Context ctx, Collector<Tuple2<Integer, byte[]>> out) throws Exception {
        JsonNode node = MAPPER.readTree(item);
        List<String> facets = new ArrayList<>();
        JsonNode cats = node.get("categories");
        if (cats != null && cats.isArray()) {  // validated: a list of strings, or absent / empty / false
            // One string per category, not per item: a million items share a few hundred facets.
            cats.forEach(c -> facets.add(("category:" + c.asText()).intern()));
        }
        ctx.getBroadcastState(CATALOG).put(node.get("item_id").asText(), facets.toArray(new String[0]));
    }
}
