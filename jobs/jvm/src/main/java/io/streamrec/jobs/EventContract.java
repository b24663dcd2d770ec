package io.streamrec.jobs;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.MalformedInputException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Pattern;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonProcessingException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.StreamReadConstraints;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The event contract on the JVM: decode and validate one {@code events} record with the rules of
 * {@code streamrec/event_rules.json}, the same file {@code streamrec/events.py} reads (the producer SDK's checks).
 * The reasons are the Python module's words, so a dead letter reads the same whoever refused it.
 */
public final class EventContract {

    /** A record that breaks the contract, with the reason the dead letter carries. */
    public static final class InvalidRecord extends Exception {
        private static final long serialVersionUID = 1L;

        public InvalidRecord(String reason) {
            super(reason, null, false, false);
        }
    }

    private static final Pattern SURROGATE_ESCAPE = Pattern.compile("\\\\u[dD][89a-fA-F]");
    private static final ObjectMapper RULES_READER = new ObjectMapper();
    private final ObjectMapper mapper;

    private final Set<String> eventTypes;
    private final String forget;
    private final String impression;
    private final int maxImpressionItems;
    private final int maxIdChars;
    private final int maxScenarioChars;
    private final int maxRecordBytes;
    private final long maxFutureMs;
    private final int[][] controlRanges;
    private final Set<Integer> whitespace;
    private final int maxTitleChars;
    private final int maxTextChars;
    private final String typesText;

    private EventContract(JsonNode rules) {
        Set<String> types = new HashSet<>();
        rules.get("event_types").forEach(t -> types.add(t.asText()));
        eventTypes = types;
        forget = rules.get("forget").asText();
        impression = rules.get("impression").asText();
        maxImpressionItems = rules.get("max_impression_items").asInt();
        maxIdChars = rules.get("max_id_chars").asInt();
        maxScenarioChars = rules.get("max_scenario_chars").asInt();
        maxRecordBytes = rules.get("max_record_bytes").asInt();
        maxFutureMs = rules.get("max_future_ms").asLong();
        List<int[]> ranges = new ArrayList<>();
        rules.get("control_ranges").forEach(r -> ranges.add(new int[] {r.get(0).asInt(), r.get(1).asInt()}));
        controlRanges = ranges.toArray(new int[0][]);
        Set<Integer> blank = new HashSet<>();
        rules.get("whitespace_chars").forEach(c -> blank.add(c.asInt()));
        whitespace = blank;
        maxTitleChars = rules.get("max_title_chars").asInt();
        maxTextChars = rules.get("max_text_chars").asInt();
        // Python's repr of the sorted list: ['cart', 'click', ...]
        StringBuilder sb = new StringBuilder("[");
        for (String t : new TreeSet<>(types)) {
            sb.append(sb.length() > 1 ? ", " : "").append('\'').append(t).append('\'');
        }
        typesText = sb.append("], '").append(forget).append("' or '").append(impression).append('\'').toString();
        // Python's json reader fails deeper than its recursion limit and on ints of more than 4300 digits: the
        // rules file fixes both limits for both readers.
        StreamReadConstraints limits = StreamReadConstraints.builder()
                .maxNestingDepth(rules.get("max_nesting").asInt())
                .maxNumberLength(rules.get("max_number_chars").asInt())
                .build();
        mapper = new ObjectMapper(JsonFactory.builder().streamReadConstraints(limits).build())
                .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    }

    /** The contract of the rules file packaged into this jar (a copy of {@code streamrec/event_rules.json}). */
    public static EventContract load() {
        try (InputStream in = EventContract.class.getResourceAsStream("/event_rules.json")) {
            if (in == null) {
                throw new IllegalStateException("event_rules.json is not in the jar: rebuild it (make setup)");
            }
            return new EventContract(RULES_READER.readTree(in));
        } catch (IOException e) {
            throw new IllegalStateException("event_rules.json: " + e.getMessage(), e);
        }
    }

    public int maxRecordBytes() {
        return maxRecordBytes;
    }

    /** Decode and validate; throws {@link InvalidRecord} with the reason. */
    public Event parse(byte[] raw, long nowMs) throws InvalidRecord {
        if (raw.length > maxRecordBytes) {
            throw new InvalidRecord("record of " + raw.length + " bytes exceeds " + maxRecordBytes);
        }
        return validate(decode(raw), nowMs);
    }

    /** Strict UTF-8, then strict JSON (one value, no NaN/Infinity, no lone surrogates). */
    public JsonNode decode(byte[] raw) throws InvalidRecord {
        String text;
        CharsetDecoder utf8 = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(raw);
        try {
            text = utf8.decode(in).toString();
        } catch (MalformedInputException e) {
            throw new InvalidRecord("not UTF-8: invalid bytes at byte " + in.position());
        } catch (CharacterCodingException e) {
            throw new InvalidRecord("not UTF-8: " + e.getMessage());
        }
        if (text.startsWith("\ufeff")) {
            throw new InvalidRecord("not JSON: Unexpected UTF-8 BOM");
        }
        JsonNode node;
        try {
            node = mapper.readTree(text);
        } catch (JsonProcessingException e) {
            throw new InvalidRecord("not JSON: " + e.getOriginalMessage());
        }
        if (node == null || node.isMissingNode()) {
            throw new InvalidRecord("not JSON: Expecting value");
        }
        if (text.contains("\\u") && SURROGATE_ESCAPE.matcher(text).find() && hasLoneSurrogate(node)) {
            throw new InvalidRecord("a string is not valid Unicode (lone surrogate escape)");
        }
        return node;
    }

    private static boolean hasLoneSurrogate(JsonNode node) {
        if (node.isTextual()) {
            return loneSurrogate(node.textValue());
        }
        if (node.isObject()) {
            Iterator<Map.Entry<String, JsonNode>> fields = node.fields();
            while (fields.hasNext()) {
                Map.Entry<String, JsonNode> f = fields.next();
                if (loneSurrogate(f.getKey()) || hasLoneSurrogate(f.getValue())) {
                    return true;
                }
            }
        } else if (node.isArray()) {
            for (JsonNode child : node) {
                if (hasLoneSurrogate(child)) {
                    return true;
                }
            }
        }
        return false;
    }

    static boolean loneSurrogate(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c)) {
                if (i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                    i++;
                } else {
                    return true;
                }
            } else if (Character.isLowSurrogate(c)) {
                return true;
            }
        }
        return false;
    }

    /** Python's type name of a JSON value, as the Python reasons say it. */
    static String pyType(JsonNode node) {
        if (node == null || node.isNull()) {
            return "NoneType";
        }
        if (node.isObject()) {
            return "dict";
        }
        if (node.isArray()) {
            return "list";
        }
        if (node.isTextual()) {
            return "str";
        }
        if (node.isBoolean()) {
            return "bool";
        }
        return node.isIntegralNumber() ? "int" : "float";
    }

    /** Why {@code node} is not a valid id, or null: the id rule of {@code streamrec.events.id_problem}. */
    public String idProblem(JsonNode node) {
        if (node == null || !node.isTextual()) {
            return "must be a string, got " + pyType(node);
        }
        return idProblem(node.textValue());
    }

    public String idProblem(String value) {
        if (value.isEmpty()) {
            return "must not be empty";
        }
        if (value.codePointCount(0, value.length()) > maxIdChars) {
            return "is longer than " + maxIdChars + " characters";
        }
        boolean blank = true;
        for (int i = 0; i < value.length(); ) {
            int cp = value.codePointAt(i);
            for (int[] r : controlRanges) {
                if (cp >= r[0] && cp <= r[1]) {
                    return "contains control characters";
                }
            }
            blank = blank && whitespace.contains(cp);  // no lookup once a character is not blank
            i += Character.charCount(cp);
        }
        if (blank) {
            return "must not be empty";
        }
        if (loneSurrogate(value)) {
            return "is not valid Unicode (lone surrogate)";
        }
        return null;
    }

    private String id(JsonNode obj, String name) throws InvalidRecord {
        String problem = idProblem(obj.get(name));
        if (problem != null) {
            throw new InvalidRecord("field '" + name + "' " + problem);
        }
        return obj.get(name).textValue();
    }

    /**
     * Check a decoded JSON value against the schema (streamrec.events.validate_event), in its order of checks:
     * user_id, item_id (not for control records), type, an impression's items, model_version and arm, then ts,
     * value, scenario, context, event_id. The same order gives the same reason for a record with several faults.
     */
    public Event validate(JsonNode obj, long nowMs) throws InvalidRecord {
        if (!obj.isObject()) {
            throw new InvalidRecord("an event must be a JSON object, got " + pyType(obj));
        }
        JsonNode typeNode = obj.get("type");
        boolean textType = typeNode != null && typeNode.isTextual();
        boolean isImpression = textType && impression.equals(typeNode.textValue());
        boolean isForget = textType && forget.equals(typeNode.textValue()) && !obj.has("item_id");
        Event ev = new Event();
        ev.userId = id(obj, "user_id");
        ev.itemId = isForget || isImpression ? "" : id(obj, "item_id");
        if (!textType || !(eventTypes.contains(typeNode.textValue()) || forget.equals(typeNode.textValue())
                || isImpression)) {
            throw new InvalidRecord("field 'type' must be one of " + typesText + ", got "
                    + (typeNode == null ? "None" : abbreviate(typeNode.toString())));
        }
        ev.type = typeNode.textValue();
        if (isImpression) {
            if (obj.has("item_id")) {
                throw new InvalidRecord("field 'item_id' must be absent from an impression (its items go in 'items')");
            }
            ev.items = impressionItems(obj.get("items"));
            ev.modelVersion = label(obj, "model_version");
            ev.arm = label(obj, "arm");
        }
        JsonNode ts = obj.get("ts");
        if (ts == null || !ts.isIntegralNumber()) {
            throw new InvalidRecord("field 'ts' must be an integer (epoch milliseconds)");
        }
        if (!ts.canConvertToLong() || ts.longValue() < 0 || ts.longValue() > nowMs + maxFutureMs) {
            throw new InvalidRecord("field 'ts' " + ts.bigIntegerValue() + " is negative or more than a day in the future");
        }
        ev.ts = ts.longValue();
        JsonNode value = obj.get("value");
        if (value != null && !value.isNull()) {
            if (!value.isNumber() || !Double.isFinite(value.doubleValue())) {
                throw new InvalidRecord("field 'value' must be a finite number");
            }
            ev.value = value.doubleValue();
        }
        JsonNode scenario = obj.get("scenario");
        if (scenario != null && !scenario.isNull()) {
            if (!scenario.isTextual() || scenario.textValue().isEmpty()
                    || scenario.textValue().codePointCount(0, scenario.textValue().length()) > maxScenarioChars) {
                throw new InvalidRecord("field 'scenario' must be a non-empty string of <= " + maxScenarioChars);
            }
            ev.scenario = scenario.textValue();
        }
        JsonNode context = obj.get("context");
        if (context != null && !context.isNull() && !context.isObject()) {
            throw new InvalidRecord("field 'context' must be a JSON object");
        }
        if (obj.has("event_id")) {
            ev.eventId = id(obj, "event_id");
        }
        return ev;
    }

    /** An impression's items: a list of 1..max_impression_items ids, each passing the id rule. */
    private String[] impressionItems(JsonNode items) throws InvalidRecord {
        if (items == null || !items.isArray() || items.size() < 1 || items.size() > maxImpressionItems) {
            throw new InvalidRecord("field 'items' must be a list of 1.." + maxImpressionItems + " item ids");
        }
        String[] out = new String[items.size()];
        for (int n = 0; n < out.length; n++) {
            String problem = idProblem(items.get(n));
            if (problem != null) {
                throw new InvalidRecord("field 'items[" + n + "]' " + problem);
            }
            out[n] = items.get(n).textValue();
        }
        return out;
    }

    /** An optional short label (an impression's model_version, arm): null is absent, "" is refused. */
    private String label(JsonNode obj, String name) throws InvalidRecord {
        JsonNode v = obj.get(name);
        if (v == null || v.isNull()) {
            return null;
        }
        if (!v.isTextual() || v.textValue().isEmpty() || chars(v.textValue()) > maxIdChars) {
            throw new InvalidRecord("field '" + name + "' must be a non-empty string of <= " + maxIdChars + " characters");
        }
        return v.textValue();
    }

    /** Whether every code point of {@code s} is whitespace (Python's {@code not s.strip()}). */
    private boolean blank(String s) {
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            if (!whitespace.contains(cp)) {
                return false;
            }
            i += Character.charCount(cp);
        }
        return true;
    }

    private static int chars(String s) {
        return s.codePointCount(0, s.length());
    }

    /** Python's truthiness of a JSON value: null, false, 0, "", [] and {} are false. */
    private static boolean truthy(JsonNode n) {
        if (n == null || n.isNull()) {
            return false;
        }
        if (n.isBoolean()) {
            return n.booleanValue();
        }
        if (n.isNumber()) {
            return n.doubleValue() != 0.0 || (n.isIntegralNumber() && n.bigIntegerValue().signum() != 0);
        }
        if (n.isTextual()) {
            return !n.textValue().isEmpty();
        }
        return n.size() > 0;
    }

    /** Decode and validate one {@code items} record (streamrec.events.parse_item); the item id. */
    public String parseItem(byte[] raw) throws InvalidRecord {
        if (raw.length > maxRecordBytes) {
            throw new InvalidRecord("record of " + raw.length + " bytes exceeds " + maxRecordBytes);
        }
        JsonNode obj = decode(raw);
        if (!obj.isObject()) {
            throw new InvalidRecord("an item must be a JSON object, got " + pyType(obj));
        }
        String itemId = id(obj, "item_id");
        JsonNode title = obj.get("title");
        if (title == null || !title.isTextual() || blank(title.textValue()) || chars(title.textValue()) > maxTitleChars) {
            throw new InvalidRecord("field 'title' must be a non-empty string of <= " + maxTitleChars + " characters");
        }
        JsonNode ts = obj.get("ts");
        if (ts != null && (!ts.isIntegralNumber() || ts.bigIntegerValue().signum() < 0)) {
            throw new InvalidRecord("field 'ts' must be a non-negative integer (epoch milliseconds)");
        }
        JsonNode text = obj.get("text");
        if (text != null && !text.isNull() && (!text.isTextual() || chars(text.textValue()) > maxTextChars)) {
            throw new InvalidRecord("field 'text' must be a string of <= " + maxTextChars + " characters");
        }
        JsonNode cats = obj.get("categories");
        if (truthy(cats)) {
            boolean ok = cats.isArray();
            for (JsonNode c : ok ? cats : List.<JsonNode>of()) {
                ok &= c.isTextual() && !c.textValue().isEmpty();
            }
            if (!ok) {
                throw new InvalidRecord("field 'categories' must be a list of non-empty strings");
            }
        }
        JsonNode attrs = obj.get("attributes");
        if (truthy(attrs) && !attrs.isObject()) {
            throw new InvalidRecord("field 'attributes' must be a JSON object");
        }
        return itemId;
    }

    private static String abbreviate(String s) {
        return s.length() > 60 ? s.substring(0, 60) : s;
    }
}
