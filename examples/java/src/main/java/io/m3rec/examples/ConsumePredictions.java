// ConsumePredictions - reads <prefix>.predictions from the beginning, decodes every message
// as a Prediction and prints a summary. With --expect N it waits (at most --timeout-ms) for
// N distinct (id, item_id) and exits 0 only if it got exactly them, every message decoded
// and every key was the prediction's user id; without it, it stops after 5 s of silence.
package io.m3rec.examples;

import io.m3rec.events.Prediction;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

public final class ConsumePredictions {
    static final String USAGE = "usage: ConsumePredictions [--bootstrap HOST:PORT] [--prefix m3rec] [--expect N]\n"
        + "               [--timeout-ms 60000] [--group ID] [--format single-object|registry] [--registry URL]";

    public static void main(String[] argv) {
        Args a = new Args(argv, USAGE, "bootstrap", "localhost:9092", "prefix", "m3rec", "expect", "-1",
            "timeout-ms", "60000", "group", "m3rec-example-" + System.nanoTime(), "format", "single-object",
            "registry", "");
        Deserializer<Prediction> values = Formats.deserializer(a.str("format"), a.str("registry"));
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, a.str("bootstrap"));
        p.put(ConsumerConfig.GROUP_ID_CONFIG, a.str("group"));
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        long expect = a.num("expect"), deadline = System.currentTimeMillis() + a.num("timeout-ms");
        long messages = 0, failed = 0, badKeys = 0, lastSeen = System.currentTimeMillis();
        Set<String> distinct = new HashSet<>();
        Map<String, double[]> perScenario = new TreeMap<>();   // scenario -> {count, sum p_ctr, sum p_ctcvr}
        // values as bytes, decoded here: a message that does not decode is counted, not fatal
        try (KafkaConsumer<String, byte[]> c = new KafkaConsumer<>(p, new StringDeserializer(), new ByteArrayDeserializer())) {
            c.subscribe(List.of(a.str("prefix") + ".predictions"));
            long now;
            while ((now = System.currentTimeMillis()) < deadline) {
                if (expect >= 0 ? distinct.size() >= expect && now - lastSeen > 1000 : now - lastSeen > 5000) break;
                for (ConsumerRecord<String, byte[]> m : c.poll(Duration.ofMillis(200))) {
                    messages++;
                    lastSeen = System.currentTimeMillis();
                    Prediction pr;
                    try {
                        pr = values.deserialize(m.topic(), m.value());
                    } catch (RuntimeException e) {
                        if (failed++ == 0) System.err.println("ConsumePredictions: offset " + m.offset() + ": " + e);
                        continue;
                    }
                    if (!Long.toString(pr.getUserId()).equals(m.key())) badKeys++;
                    distinct.add(pr.getId() + "/" + pr.getItemId());
                    double[] s = perScenario.computeIfAbsent(pr.getScenario(), k -> new double[3]);
                    s[0]++;
                    s[1] += pr.getPCtr();
                    s[2] += pr.getPCtcvr();
                }
            }
        }
        System.out.printf("predictions messages=%d decoded=%d distinct=%d failed=%d bad_keys=%d%n", messages,
            messages - failed, distinct.size(), failed, badKeys);
        perScenario.forEach((k, s) -> System.out.printf("  %-10s %8.0f predictions, mean p_ctr %.4f, mean p_ctcvr %.5f%n",
            k, s[0], s[1] / s[0], s[2] / s[0]));
        boolean ok = failed == 0 && badKeys == 0 && (expect < 0 || distinct.size() == expect);
        if (!ok && expect >= 0) System.err.printf("ConsumePredictions: expected %d distinct predictions%n", expect);
        System.exit(ok ? 0 : 1);
    }
}
