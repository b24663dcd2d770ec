package io.streamrec.jobs;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ArrayNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * The JVM side of the agreement tests (tests/unit/test_event_rules_agree.py), one JSON line in, one out:
 *
 * <ul>
 *   <li>{@code validate NOW_MS}: base64 records -> {@code {"ok", "reason", "user_id", "item_id", "type", "ts",
 *       "value", "scenario", "event_id", "items", "model_version", "arm"}} ({@code items} [] but on impressions);
 *   <li>{@code validate-item}: base64 {@code items} records -> {@code {"ok", "reason", "item_id"}};
 *   <li>{@code apply PARAMS_JSON}: one user's records {@code {"user_id", "item_id", "type", "ts", "value",
 *       "scenario", "facets": [...]}} (impressions: {@code "items", "model_version", "arm"} instead of the item;
 *       forget records too) -> the user's state after all of them ({@code {"n", "t", "r", "s", "i", "x"
 *       (impressions), "flush" (the writer's record, {@link UserInterest#encode})}}), then the Redis commands of
 *       its flush ({@code {"resp_b64"}}).
 * </ul>
 */
public final class ContractCli {
    private ContractCli() {}

    public static void main(String[] args) throws Exception {
        ObjectMapper mapper = new ObjectMapper();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        if ("validate".equals(args[0])) {
            EventContract contract = EventContract.load();
            long now = Long.parseLong(args[1]);
            for (String line; (line = in.readLine()) != null; ) {
                ObjectNode verdict = mapper.createObjectNode();
                try {
                    Event ev = contract.parse(Base64.getDecoder().decode(line.trim()), now);
                    verdict.put("ok", true).put("user_id", ev.userId).put("item_id", ev.itemId).put("type", ev.type)
                            .put("ts", ev.ts).put("value", ev.value).put("scenario", ev.scenario)
                            .put("event_id", ev.eventId).put("model_version", ev.modelVersion).put("arm", ev.arm);
                    ArrayNode items = verdict.putArray("items");
                    for (String item : ev.items == null ? new String[0] : ev.items) {
                        items.add(item);
                    }
                } catch (EventContract.InvalidRecord e) {
                    verdict.put("ok", false).put("reason", e.getMessage());
                }
                out.println(mapper.writeValueAsString(verdict));
            }
        } else if ("validate-item".equals(args[0])) {
            EventContract contract = EventContract.load();
            for (String line; (line = in.readLine()) != null; ) {
                ObjectNode verdict = mapper.createObjectNode();
                try {
                    verdict.put("ok", true).put("item_id", contract.parseItem(Base64.getDecoder().decode(line.trim())));
                } catch (EventContract.InvalidRecord e) {
                    verdict.put("ok", false).put("reason", e.getMessage());
                }
                out.println(mapper.writeValueAsString(verdict));
            }
        } else if ("apply".equals(args[0])) {
            JobParams p = JobParams.fromJson(args[1]);
            UserInterest job = new UserInterest(p);
            UserState s = null;
            for (String line; (line = in.readLine()) != null; ) {
                JsonNode e = mapper.readTree(line);
                Event ev = new Event();
                ev.userId = e.get("user_id").asText();
                ev.itemId = e.path("item_id").asText("");
                ev.type = e.get("type").asText();
                ev.ts = e.get("ts").asLong();
                ev.value = e.hasNonNull("value") ? e.get("value").asDouble() : null;
                ev.scenario = e.hasNonNull("scenario") ? e.get("scenario").asText() : null;
                if (e.has("items")) {
                    List<String> items = new ArrayList<>();
                    e.get("items").forEach(i -> items.add(i.asText()));
                    ev.items = items.toArray(new String[0]);
                }
                ev.modelVersion = e.hasNonNull("model_version") ? e.get("model_version").asText() : null;
                ev.arm = e.hasNonNull("arm") ? e.get("arm").asText() : null;
                List<String> facets = new ArrayList<>();
                e.path("facets").forEach(f -> facets.add(f.asText()));
                if (s == null) {
                    s = new UserState(ev.userId);
                }
                s = job.step(s, ev, facets.toArray(new String[0]));
            }
            if (s != null) {
                ObjectNode state = mapper.createObjectNode().put("n", s.events).put("t", s.lastTs);
                state.set("r", mapper.readTree(UserInterest.recentJson(s)));
                state.set("s", mapper.readTree(UserInterest.strings(s.seen)));
                ObjectNode interests = state.putObject("i");
                s.interestEntries().forEach(e -> interests.put(e.getKey(), e.getValue()));
                state.put("x", s.impressions);
                state.set("flush", mapper.readTree(UserInterest.encode(s)));
                out.println(mapper.writeValueAsString(state));
                java.io.ByteArrayOutputStream resp = new java.io.ByteArrayOutputStream();
                RedisCommands.encode(s, RedisCommands.top(s, p.topInterests), p, resp);
                out.println(mapper.writeValueAsString(
                        mapper.createObjectNode().put("resp_b64", Base64.getEncoder().encodeToString(resp.toByteArray()))));
            }
        } else {
            throw new IllegalArgumentException("usage: ContractCli validate NOW_MS | apply PARAMS_JSON");
        }
        out.flush();
    }
}
