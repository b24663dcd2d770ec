package io.streamrec.jobs;

import java.util.AbstractMap;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;

/**
 * One user's interest state in the job: the state {@code jobs/state.py} describes (recent items with times and
 * scenarios in event-time order, the seen items, time-decayed interests per facet), plus what the next flush
 * reports and the dedup ids.
 *
 * <p>A Flink POJO of strings, primitives and arrays only: Flink serializes it with its own field serializers (no
 * Kryo), which a checkpoint of every user's state and the heap backend's copy-on-write both run through. The
 * methods keep the arrays' invariants; they are small (tens of entries), seen aside (a linear scan of at most
 * {@code max_seen_items}).
 *
 * <p>Fields added after the first release have defaults (the initializers here): Flink's POJO serializer restores
 * a state written before a field existed by the no-arg constructor and then the fields the savepoint has, so the
 * new ones keep these values (UserInterestTest checks that path with a serializer of the older fields).
 */
public class UserState {
    public String userId;
    public long events;
    public long lastTs;
    // The last `recent_items` (ts, item, scenario), oldest first, in event-time order.
    public long[] recentTs = new long[0];
    public String[] recentItems = new String[0];
    public String[] recentScenarios = new String[0];
    // Every item the user acted on, oldest first, capped: never recommended back.
    public String[] seen = new String[0];
    // Facet ("scenario:web", "category:Drama") -> decayed weight, valid at interestsTs.
    public String[] facets = new String[0];
    public double[] weights = new double[0];
    public long interestsTs;
    // (item, scenario) of the actions since the last flush: the writer's online hit rate.
    public String[] pendingItems = new String[0];
    public String[] pendingScenarios = new String[0];
    // event_id and the processing time it was first applied, oldest first: duplicates within the TTL are dropped.
    public String[] eventIds = new String[0];
    public long[] eventTimes = new long[0];
    // Impression records applied (lists shown to the user); not actions, so not in `events`.
    public long impressions;
    // Items shown and not acted on since, with how often: least recently shown first, capped at max_shown_items.
    public String[] shownItems = new String[0];
    public int[] shownCounts = new int[0];
    // The latest event time each was shown at: the repeat rule's cooling period runs from it.
    public long[] shownTs = new long[0];
    // (model version or "", arm or "", scenario, distinct items) of the impressions since the last flush.
    public String[] pendingShownVersions = new String[0];
    public String[] pendingShownArms = new String[0];
    public String[] pendingShownScenarios = new String[0];
    public int[] pendingShownSizes = new int[0];
    // A forget record since the last flush: the writer deletes the user's keys before writing anything newer.
    public boolean forgotten;
    // Changed since the last flush.
    public boolean dirty;

    public UserState() {}

    public UserState(String userId) {
        this.userId = userId;
    }

    /** {@code item} becomes the newest seen item (moved there if it was seen before); the oldest beyond cap go. */
    void touchSeen(String item, int cap) {
        int n = seen.length;
        if (n > 0 && seen[n - 1].equals(item)) {
            return;
        }
        int at = -1;
        for (int i = 0; i < n; i++) {
            if (seen[i].equals(item)) {
                at = i;
                break;
            }
        }
        int size = at >= 0 ? n : n + 1;
        int drop = Math.max(0, size - cap);
        String[] out = new String[size - drop];
        int j = 0;
        for (int i = 0; i < n; i++) {
            if (i != at) {
                if (drop > 0) {
                    drop--;
                } else {
                    out[j++] = seen[i];
                }
            }
        }
        out[j] = item;
        seen = out;
    }

    /** Every weight times {@code decay}; facets that fall to nothing go. */
    void decayInterests(double decay) {
        int j = 0;
        for (int i = 0; i < facets.length; i++) {
            double v = weights[i] * decay;
            if (Math.abs(v) > 1e-6) {
                facets[j] = facets[i];
                weights[j++] = v;
            }
        }
        if (j < facets.length) {
            facets = Arrays.copyOf(facets, j);
            weights = Arrays.copyOf(weights, j);
        }
    }

    void addInterest(String facet, double w) {
        for (int i = 0; i < facets.length; i++) {
            if (facets[i].equals(facet)) {
                weights[i] += w;
                return;
            }
        }
        facets = Arrays.copyOf(facets, facets.length + 1);
        weights = Arrays.copyOf(weights, weights.length + 1);
        facets[facets.length - 1] = facet;
        weights[weights.length - 1] = w;
    }

    /** The weight of a facet (0 when absent). */
    public double interest(String facet) {
        for (int i = 0; i < facets.length; i++) {
            if (facets[i].equals(facet)) {
                return weights[i];
            }
        }
        return 0.0;
    }

    /** (facet, weight) pairs, in the order they were first seen. */
    List<Map.Entry<String, Double>> interestEntries() {
        List<Map.Entry<String, Double>> out = new ArrayList<>(facets.length);
        for (int i = 0; i < facets.length; i++) {
            out.add(new AbstractMap.SimpleImmutableEntry<>(facets[i], weights[i]));
        }
        return out;
    }

    /**
     * One list shown: each distinct item's count goes up by one and the item becomes the most recently shown
     * (in the list's order); beyond {@code cap} the least recently shown go. Returns the distinct items.
     * One pass and one copy per list (a list is up to max_impression_items, the map up to max_shown_items).
     */
    int show(String[] items, int cap, long ts) {
        LinkedHashSet<String> distinct = new LinkedHashSet<>(Arrays.asList(items));
        HashMap<String, Integer> before = new HashMap<>();
        HashMap<String, Long> beforeTs = new HashMap<>();
        int kept = 0;
        for (int i = 0; i < shownItems.length; i++) {
            if (distinct.contains(shownItems[i])) {
                before.put(shownItems[i], shownCounts[i]);
                beforeTs.put(shownItems[i], i < shownTs.length ? shownTs[i] : 0L);
            } else {
                kept++;
            }
        }
        int size = kept + distinct.size();
        int drop = Math.max(0, size - cap);
        String[] outItems = new String[size - drop];
        int[] outCounts = new int[size - drop];
        long[] outTs = new long[size - drop];
        int j = 0;
        int at = 0;  // position in the merged order: kept entries, then the list's
        for (int i = 0; i < shownItems.length; i++) {
            if (!distinct.contains(shownItems[i]) && at++ >= drop) {
                outItems[j] = shownItems[i];
                outTs[j] = i < shownTs.length ? shownTs[i] : 0L;
                outCounts[j++] = shownCounts[i];
            }
        }
        for (String item : distinct) {
            if (at++ >= drop) {
                outItems[j] = item;
                outTs[j] = Math.max(beforeTs.getOrDefault(item, 0L), ts);  // a late impression keeps the latest
                outCounts[j++] = before.getOrDefault(item, 0) + 1;
            }
        }
        shownItems = outItems;
        shownCounts = outCounts;
        shownTs = outTs;
        return distinct.size();
    }

    /** An action on {@code item}: it was acted on, so it no longer counts as shown without an action. */
    void unshow(String item) {
        for (int i = 0; i < shownItems.length; i++) {
            if (shownItems[i].equals(item)) {
                String[] outItems = new String[shownItems.length - 1];
                int[] outCounts = new int[shownCounts.length - 1];
                long[] outTs = new long[shownItems.length - 1];
                System.arraycopy(shownItems, 0, outItems, 0, i);
                System.arraycopy(shownCounts, 0, outCounts, 0, i);
                System.arraycopy(shownItems, i + 1, outItems, i, shownItems.length - i - 1);
                System.arraycopy(shownCounts, i + 1, outCounts, i, shownCounts.length - i - 1);
                if (shownTs.length == shownItems.length) {
                    System.arraycopy(shownTs, 0, outTs, 0, i);
                    System.arraycopy(shownTs, i + 1, outTs, i, shownTs.length - i - 1);
                }
                shownItems = outItems;
                shownCounts = outCounts;
                shownTs = outTs;
                return;
            }
        }
    }

    /** How often {@code item} was shown without an action since (0 when it is not in the map). */
    public int shown(String item) {
        for (int i = 0; i < shownItems.length; i++) {
            if (shownItems[i].equals(item)) {
                return shownCounts[i];
            }
        }
        return 0;
    }

    void addPendingShown(String version, String arm, String scenario, int size) {
        int n = pendingShownSizes.length;
        pendingShownVersions = Arrays.copyOf(pendingShownVersions, n + 1);
        pendingShownArms = Arrays.copyOf(pendingShownArms, n + 1);
        pendingShownScenarios = Arrays.copyOf(pendingShownScenarios, n + 1);
        pendingShownSizes = Arrays.copyOf(pendingShownSizes, n + 1);
        pendingShownVersions[n] = version;
        pendingShownArms[n] = arm;
        pendingShownScenarios[n] = scenario;
        pendingShownSizes[n] = size;
    }

    void addPending(String item, String scenario) {
        pendingItems = Arrays.copyOf(pendingItems, pendingItems.length + 1);
        pendingScenarios = Arrays.copyOf(pendingScenarios, pendingScenarios.length + 1);
        pendingItems[pendingItems.length - 1] = item;
        pendingScenarios[pendingScenarios.length - 1] = scenario;
    }

    void clearPending() {
        pendingItems = new String[0];
        pendingScenarios = new String[0];
        pendingShownVersions = new String[0];
        pendingShownArms = new String[0];
        pendingShownScenarios = new String[0];
        pendingShownSizes = new int[0];
    }

    /**
     * Whether {@code eventId} was applied within {@code ttlMs} (then it is a duplicate); else it is remembered.
     * Ids older than the TTL, and beyond {@code maxIds} the oldest, are forgotten first.
     */
    boolean seenEventId(String eventId, long now, long ttlMs, int maxIds) {
        int keepFrom = 0;
        while (keepFrom < eventIds.length
                && (now - eventTimes[keepFrom] > ttlMs || eventIds.length - keepFrom >= maxIds)) {
            keepFrom++;
        }
        for (int i = keepFrom; i < eventIds.length; i++) {
            if (eventIds[i].equals(eventId)) {
                trimEventIds(keepFrom, 0);
                return true;
            }
        }
        trimEventIds(keepFrom, 1);
        eventIds[eventIds.length - 1] = eventId;
        eventTimes[eventTimes.length - 1] = now;
        return false;
    }

    private void trimEventIds(int from, int extra) {
        if (from == 0 && extra == 0) {
            return;
        }
        eventIds = Arrays.copyOfRange(eventIds, from, eventIds.length + extra);
        eventTimes = Arrays.copyOfRange(eventTimes, from, eventTimes.length + extra);
    }
}
