// Produce - an m3rec input producer: Impressions and Conversions to <prefix>.events.<scenario>,
// ScoreRequests to <prefix>.requests, keyed by the decimal user id (docs/contract.md), with
// kafka-clients' default partitioner (murmur2, as m3rec's contract assumes).
package io.m3rec.examples;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.specific.SpecificRecord;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class Produce {
    static final String USAGE = "usage: Produce [--bootstrap HOST:PORT] [--prefix m3rec] [--scenarios home,search,product]\n"
        + "               [--impressions N] [--candidates K] [--seed S] [--run-id ID] [--users N] [--items N]\n"
        + "               [--format single-object|registry] [--registry URL] [--create-topics PARTITIONS]\n"
        + "--create-topics: first create the worker's six topics with that many partitions (if missing)";

    /**
     * Creates <prefix>.events.<scenario>, .requests, .predictions and .dlq with `parts`
     * partitions each (the input topics must have equal counts), replication factor 1 (the
     * test broker of scripts/kafka); topics that exist are left as they are.
     */
    static void createTopics(String bootstrap, String prefix, List<String> scenarios, int parts) throws Exception {
        List<NewTopic> topics = new ArrayList<>();
        for (String s : scenarios) topics.add(new NewTopic(prefix + ".events." + s, parts, (short) 1));
        for (String t : List.of("requests", "predictions", "dlq")) topics.add(new NewTopic(prefix + "." + t, parts, (short) 1));
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            for (var f : admin.createTopics(topics).values().entrySet()) {
                try {
                    f.getValue().get();
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) throw e;
                }
            }
        }
    }

    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv, USAGE, "bootstrap", "localhost:9092", "prefix", "m3rec",
            "scenarios", "home,search,product", "impressions", "3000", "candidates", "5", "seed", "1",
            "run-id", "java", "users", "200", "items", "300", "format", "single-object", "registry", "",
            "create-topics", "0");
        Serializer<SpecificRecord> values = Formats.serializer(a.str("format"), a.str("registry"));
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, a.str("bootstrap"));
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        // no broker (or one that does not speak Kafka 4's protocol): fail in 15 s, not hang
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "15000");
        String prefix = a.str("prefix");
        List<String> scenarios = List.of(a.str("scenarios").split(","));
        if (a.num("create-topics") > 0) createTopics(a.str("bootstrap"), prefix, scenarios, (int) a.num("create-topics"));
        SyntheticStream s = new SyntheticStream(a.num("seed"), a.str("run-id"), (int) a.num("users"), (int) a.num("items"));
        AtomicLong failed = new AtomicLong();
        try (KafkaProducer<String, SpecificRecord> producer = new KafkaProducer<>(p, new StringSerializer(), values)) {
            s.generate(scenarios, a.num("impressions"), (int) a.num("candidates"), (scen, r) -> {
                if (failed.get() > 0) return;   // after the first failure: skip the rest, exit 1
                String topic = scen != null ? prefix + ".events." + scen : prefix + ".requests";
                // the key: the user id in decimal ASCII, the same on every record of that user
                String key = Long.toString((Long) r.get(r.getSchema().getField("user_id").pos()));
                producer.send(new ProducerRecord<>(topic, key, r), (md, e) -> {
                    if (e != null && failed.getAndIncrement() == 0) System.err.println("Produce: " + e);
                });
            });
            producer.flush();
        }
        System.out.printf("produced impressions=%d conversions=%d requests=%d candidates=%d failed=%d"
            + " expected_predictions=%d%n", s.impressions, s.conversions, s.requests, s.candidates, failed.get(),
            s.impressions + s.candidates);
        System.exit(failed.get() == 0 ? 0 : 1);
    }
}
