package io.streamrec.jobs;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;

import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.metrics.Counter;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.util.Collector;

/**
 * Keyed by writer shard: gather the user records of one flush into one batch record, the only thing the Python
 * writer receives: the JSON {@code {"shard", "final", "records": [...]}}, a newline, then the records' Redis
 * commands (RESP, see {@link RedisCommands}) back to back. Python runs once per batch, never per event.
 * The catalog's items are batched the same way (one shard, no commands).
 *
 * <p>A batch leaves {@code batchDelayMs} after its first record (the users' flush timers fire together). While
 * records came within {@code tickForMs}, an empty batch leaves every flush interval too: the writer scores its
 * backlog of users on it (rec: lags the state path when the scorer is the bottleneck). With bounded input, the
 * end-of-input batch is marked {@code final}: the writer then scores everything it holds.
 */
public class Batcher extends KeyedProcessFunction<Integer, Tuple2<Integer, byte[]>, byte[]> {
    private static final long serialVersionUID = 1L;
    private final JobParams p;
    private transient ListState<byte[]> pending;
    private transient ValueState<Long> armedAt;
    private transient ValueState<Long> lastData;
    private transient Counter batches;
    private transient Counter users;

    public Batcher(JobParams params) {
        this.p = params;
    }

    @Override
    public void open(OpenContext context) {
        pending = getRuntimeContext().getListState(
                new ListStateDescriptor<>("pending", PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO));
        armedAt = getRuntimeContext().getState(new ValueStateDescriptor<>("armed-at", Types.LONG));
        lastData = getRuntimeContext().getState(new ValueStateDescriptor<>("last-data", Types.LONG));
        batches = getRuntimeContext().getMetricGroup().counter("batches");
        users = getRuntimeContext().getMetricGroup().counter("batch_users");
    }

    @Override
    public void processElement(Tuple2<Integer, byte[]> user, Context ctx, Collector<byte[]> out) throws Exception {
        pending.add(user.f1);
        long now = ctx.timerService().currentProcessingTime();
        lastData.update(now);
        Long armed = armedAt.value();
        if (armed == null || armed > now + p.batchDelayMs) {  // none, or only a later tick: flush sooner
            armedAt.update(now + p.batchDelayMs);
            ctx.timerService().registerProcessingTimeTimer(now + p.batchDelayMs);
        }
        if (p.flushAtEndOfInput) {
            ctx.timerService().registerEventTimeTimer(UserInterest.END_OF_INPUT);
        }
    }

    @Override
    public void onTimer(long timestamp, OnTimerContext ctx, Collector<byte[]> out) throws Exception {
        boolean last = timestamp == UserInterest.END_OF_INPUT;
        Long armed = armedAt.value();
        if (!last && (armed == null || armed != timestamp)) {
            return;  // superseded by a sooner timer
        }
        armedAt.clear();
        ByteArrayOutputStream buf = new ByteArrayOutputStream(4096);
        buf.writeBytes(("{\"shard\":" + ctx.getCurrentKey() + ",\"final\":" + last + ",\"records\":[")
                .getBytes(StandardCharsets.US_ASCII));
        int n = 0;
        ByteArrayOutputStream commands = new ByteArrayOutputStream(4096);
        Iterable<byte[]> records = pending.get();
        if (records != null) {
            for (byte[] r : records) {
                if (n++ > 0) {
                    buf.write(',');
                }
                int len = java.nio.ByteBuffer.wrap(r, 0, 4).getInt();
                buf.write(r, 4, len);
                commands.write(r, 4 + len, r.length - 4 - len);
            }
        }
        buf.writeBytes("]}\n".getBytes(StandardCharsets.US_ASCII));
        commands.writeTo(buf);
        pending.clear();
        long now = ctx.timerService().currentProcessingTime();
        Long data = lastData.value();
        if (!last && data != null && now - data <= p.tickForMs) {
            long next = now + p.flushIntervalMs;
            armedAt.update(next);
            ctx.timerService().registerProcessingTimeTimer(next);
        }
        if (n == 0 && !last && data != null && now - data > p.tickForMs) {
            return;
        }
        batches.inc();
        users.inc(n);
        out.collect(buf.toByteArray());
    }
}
