package io.streamrec.jobs;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;

/**
 * One user's interest state in the job (a Flink POJO, kept as a heap object: no serialization per event).
 * The same state {@code jobs/state.py} describes: recent items with times and scenarios in event-time order,
 * the seen items, time-decayed interests per facet; plus what the next flush reports and the dedup ids.
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
    public LinkedHashSet<String> seen = new LinkedHashSet<>();
    // Facet ("scenario:web", "category:Drama") -> decayed weight, valid at interestsTs.
    public HashMap<String, Double> interests = new HashMap<>();
    public long interestsTs;
    // (item, scenario) of the actions since the last flush: the writer's online hit rate.
    public ArrayList<String> pendingItems = new ArrayList<>();
    public ArrayList<String> pendingScenarios = new ArrayList<>();
    // event_id -> processing time first applied (insertion order = age): duplicates within the TTL are dropped.
    public LinkedHashMap<String, Long> eventIds = new LinkedHashMap<>();
    // A forget record since the last flush: the writer deletes the user's keys before writing anything newer.
    public boolean forgotten;
    // Changed since the last flush.
    public boolean dirty;

    public UserState() {}

    public UserState(String userId) {
        this.userId = userId;
    }
}
