package io.streamrec.jobs;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/** One batch's newline-separated audit records (the Python writer's output) -> one Kafka record each. */
public final class SplitLines implements FlatMapFunction<byte[], byte[]> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(byte[] batch, Collector<byte[]> out) {
        int start = 0;
        for (int i = 0; i <= batch.length; i++) {
            if (i == batch.length || batch[i] == '\n') {
                if (i > start) {
                    byte[] line = new byte[i - start];
                    System.arraycopy(batch, start, line, 0, line.length);
                    out.collect(line);
                }
                start = i + 1;
            }
        }
    }
}
