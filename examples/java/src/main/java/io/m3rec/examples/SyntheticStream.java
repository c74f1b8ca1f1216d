// SyntheticStream - a small deterministic stream of Impressions, Conversions and
// ScoreRequests with the features config/worker.properties reads, for the examples.
package io.m3rec.examples;

import io.m3rec.events.Candidate;
import io.m3rec.events.Conversion;
import io.m3rec.events.Impression;
import io.m3rec.events.ScoreRequest;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.function.BiConsumer;
import org.apache.avro.specific.SpecificRecord;

final class SyntheticStream {
    /** What was generated: the worker answers every impression and every candidate. */
    long impressions, conversions, requests, candidates;

    private final Random rnd;
    private final String runId;
    private final int users, items;
    private long ts = System.currentTimeMillis();

    SyntheticStream(long seed, String runId, int users, int items) {
        this.rnd = new Random(seed);
        this.runId = runId;
        this.users = users;
        this.items = items;
    }

    private static Map<String, Long> cats(long id, String... names) {
        Map<String, Long> m = new HashMap<>();
        for (int i = 0; i < names.length; i++) m.put(names[i], Math.floorMod(id * 31 + i * 7, 5L + 3 * i));
        return m;
    }

    private static Map<String, Float> nums(long id, String... names) {
        Map<String, Float> m = new HashMap<>();
        for (int i = 0; i < names.length; i++) m.put(names[i], (float) Math.floorMod(id * 13 + i, 100) / 10f);
        return m;
    }

    /**
     * Emits n impressions spread over the scenarios (a conversion follows some clicks),
     * then one score request of k candidates per scenario every 10 impressions, to
     * out.accept(scenario or null for a request, record). Event times rise from now.
     */
    void generate(List<String> scenarios, long n, int k, BiConsumer<String, SpecificRecord> out) {
        for (long i = 0; i < n; i++) {
            String scen = scenarios.get((int) (i % scenarios.size()));
            long user = 1 + rnd.nextInt(users), item = 1 + rnd.nextInt(items);
            ts += 10;
            // a click is likelier when user and item "match": something for the model to learn
            boolean clicked = rnd.nextDouble() < ((user + item) % 3 == 0 ? 0.3 : 0.05);
            String impId = runId + "-imp-" + i;
            Impression imp = Impression.newBuilder().setImpressionId(impId).setTsMs(java.time.Instant.ofEpochMilli(ts))
                .setScenario(scen).setUserId(user).setItemId(item)
                .setUserCat(cats(user, "age", "gender", "city", "tier")).setItemCat(cats(item, "category", "brand", "shop"))
                .setCtxCat(Map.of("device", (long) rnd.nextInt(3))).setUserNum(nums(user, "activity"))
                .setItemNum(nums(item, "price", "rating")).setClicked(clicked).build();
            out.accept(scen, imp);
            impressions++;
            if (clicked && rnd.nextDouble() < 0.3) {
                Conversion c = Conversion.newBuilder().setConversionId(runId + "-conv-" + i).setImpressionId(impId)
                    .setTsMs(java.time.Instant.ofEpochMilli(ts + 5)).setScenario(scen).setUserId(user).setItemId(item)
                    .build();
                out.accept(scen, c);
                conversions++;
            }
            if (i % 10 == 9) out.accept(null, request(scen, 1 + rnd.nextInt(users), k, i));
        }
    }

    private ScoreRequest request(String scen, long user, int k, long i) {
        List<Candidate> cands = new ArrayList<>();
        Set<Long> picked = new HashSet<>();   // distinct candidates: one prediction each
        while (picked.size() < Math.min(k, items)) {
            long item = 1 + rnd.nextInt(items);
            if (!picked.add(item)) continue;
            cands.add(Candidate.newBuilder().setItemId(item).setItemCat(cats(item, "category", "brand", "shop"))
                .setItemNum(nums(item, "price", "rating")).build());
        }
        requests++;
        candidates += cands.size();
        return ScoreRequest.newBuilder().setRequestId(runId + "-req-" + i).setTsMs(java.time.Instant.ofEpochMilli(ts))
            .setScenario(scen).setUserId(user).setUserCat(cats(user, "age", "gender", "city", "tier"))
            .setCtxCat(Map.of("device", 1L)).setUserNum(nums(user, "activity")).setCandidates(cands).build();
    }
}
