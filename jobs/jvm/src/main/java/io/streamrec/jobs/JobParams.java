package io.streamrec.jobs;

import java.io.Serializable;
import java.util.HashMap;
import java.util.Map;

/** The job's knobs, from the Python config ({@code streamrec.config.JobConfig}) at wiring time: no defaults here. */
public class JobParams implements Serializable {
    private static final long serialVersionUID = 1L;
    public int recentItems;
    public int maxSeenItems;
    // The shown-without-action map's cap (job.max_shown_items).
    public int maxShownItems;
    public double halfLifeHours;
    public long flushIntervalMs;
    public int shards;
    public long dedupTtlMs;
    public int dedupMaxIds;
    public int topInterests;
    public long batchDelayMs;
    public long tickForMs;
    public boolean flushAtEndOfInput;
    public String forgetType;
    public String impressionType;
    public String defaultScenario;
    public double ratingMidpoint;
    public Map<String, Double> typeWeights = new HashMap<>();
    // The Redis layout of serving/store.py (key prefixes, user:{id} hash fields): handed over, not redefined.
    public String userKeyPrefix;
    public String recKeyPrefix;
    public int interestDecimals;

    public JobParams() {}

    /** From the JSON object {@code jobs/interest.py} writes (these field names). */
    public static JobParams fromJson(String json) {
        try {
            return new org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper()
                    .readValue(json, JobParams.class);
        } catch (java.io.IOException e) {
            throw new IllegalArgumentException("job parameters: " + e.getMessage(), e);
        }
    }
}
