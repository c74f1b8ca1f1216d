// Registry - Kafka serdes in schema-registry framing (magic byte 0, 4-byte schema id, datum:
// the Confluent wire format) from Apicurio Registry's Avro serde, against any Apicurio
// Registry (it speaks Apicurio's v2 REST API at URL/apis/registry/v2, which 2.x and 3.x
// registries serve). The ids it writes and reads are content ids, the ids Apicurio's
// Confluent-compatible API (URL/apis/ccompat/v7) serves.
package io.m3rec.examples;

import io.apicurio.registry.serde.Legacy4ByteIdHandler;
import io.apicurio.registry.serde.avro.AvroKafkaDeserializer;
import io.apicurio.registry.serde.avro.AvroKafkaSerializer;
import io.apicurio.registry.serde.avro.strategy.RecordIdStrategy;
import io.m3rec.events.Prediction;
import java.util.HashMap;
import java.util.Map;
import org.apache.avro.specific.SpecificRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serializer;

final class Registry {
    private Registry() {}

    /** The settings shared by both directions; url is the registry's base URL (http://host:port). */
    private static Map<String, Object> common(String url) {
        if (url.isEmpty()) throw new IllegalArgumentException("--format registry needs --registry http://HOST:PORT");
        Map<String, Object> c = new HashMap<>();
        c.put("apicurio.registry.url", url.replaceAll("/+$", "") + "/apis/registry/v2");
        c.put("apicurio.registry.headers.enabled", false);   // the id in the value, not in headers
        // 0x00 + 4-byte id, Confluent's framing (what apicurio.registry.as-confluent selects)
        c.put("apicurio.registry.id-handler", Legacy4ByteIdHandler.class.getName());
        c.put("apicurio.registry.use-id", "contentId");      // the id Confluent-API clients see
        return c;
    }

    /**
     * Registers each record's schema on first use under its full name (RecordIdStrategy,
     * Confluent's RecordNameStrategy: an events topic carries two record types).
     */
    static Serializer<SpecificRecord> serializer(String url) {
        Map<String, Object> c = common(url);
        c.put("apicurio.registry.auto-register", true);
        c.put("apicurio.registry.artifact-resolver-strategy", RecordIdStrategy.class.getName());
        AvroKafkaSerializer<SpecificRecord> s = new AvroKafkaSerializer<>();
        s.configure(c, false);
        return s;
    }

    /** Looks the writer schema up by the message's id; decodes into the generated Prediction. */
    static Deserializer<Prediction> deserializer(String url) {
        Map<String, Object> c = common(url);
        c.put("apicurio.registry.use-specific-avro-reader", true);
        AvroKafkaDeserializer<Prediction> d = new AvroKafkaDeserializer<>();
        d.configure(c, false);
        return d;
    }
}
