package io.streamrec.jobs;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;

/**
 * A user's Redis writes, packed as RESP on the JVM so that the Python writer sends a batch's state writes as one
 * buffer: {@code DEL rec:{id} user:{id}} for a forgotten user, then {@code HSET user:{id}} with the fields of
 * {@code serving.store.UserView.to_hash} ({@code events}, {@code last_ts}, {@code recent}, {@code interests}),
 * and {@code impressions} (the lists shown to the user) once there were any. A user who was shown lists but never
 * acted gets no {@code HSET}: the hash's required fields describe actions, and the writer counts one reply for a
 * user with {@code events > 0}.
 * tests/unit/test_event_rules_agree.py decodes what this writes with {@code serving.store.decode_user}.
 */
public final class RedisCommands {
    private static final JsonFactory JSON = new JsonFactory();

    private RedisCommands() {}

    /** The commands of one user's flush, and how many there are (each has one reply). */
    public static int encode(UserState s, List<Map.Entry<String, Double>> top, JobParams p, ByteArrayOutputStream out) {
        int n = 0;
        if (s.forgotten) {
            command(out, "DEL", p.recKeyPrefix + s.userId, p.userKeyPrefix + s.userId);
            n++;
        }
        if (s.events > 0) {
            String[] hset = {"HSET", p.userKeyPrefix + s.userId, "events", Long.toString(s.events), "last_ts",
                    Long.toString(s.lastTs), "recent", UserInterest.strings(s.recentItems), "interests",
                    interestsJson(top, p.interestDecimals), "impressions", Long.toString(s.impressions)};
            command(out, s.impressions > 0 ? hset : Arrays.copyOf(hset, hset.length - 2));
            n++;
        }
        return n;
    }

    private static String interestsJson(List<Map.Entry<String, Double>> top, int decimals) {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(32 * top.size() + 2);
        try (JsonGenerator g = JSON.createGenerator(buf)) {
            g.writeStartObject();
            for (Map.Entry<String, Double> e : top) {
                // Python's round(v, n): the exact binary value rounded half to even.
                g.writeNumberField(e.getKey(),
                        new BigDecimal(e.getValue()).setScale(decimals, RoundingMode.HALF_EVEN).doubleValue());
            }
            g.writeEndObject();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return buf.toString(StandardCharsets.UTF_8);
    }

    /** One command in RESP: an array of bulk strings. */
    static void command(ByteArrayOutputStream out, String... args) {
        out.writeBytes(("*" + args.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
        for (String a : args) {
            byte[] b = a.getBytes(StandardCharsets.UTF_8);
            out.writeBytes(("$" + b.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
            out.writeBytes(b);
            out.writeBytes(new byte[] {'\r', '\n'});
        }
    }

    /** The top interests: by magnitude, strongest first (a dislike is strong too). */
    static List<Map.Entry<String, Double>> top(UserState s, int n) {
        List<Map.Entry<String, Double>> all = s.interestEntries();
        all.sort((a, b) -> Double.compare(Math.abs(b.getValue()), Math.abs(a.getValue())));
        return all.subList(0, Math.min(n, all.size()));
    }
}
