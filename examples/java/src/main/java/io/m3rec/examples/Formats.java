// Formats - the value serdes by --format name, as the worker's input.format and
// output.format: "single-object" (Avro single-object encoding, the default) or
// "registry" (schema-registry framing, Registry.java).
package io.m3rec.examples;

import io.m3rec.events.Prediction;
import org.apache.avro.specific.SpecificRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serializer;

final class Formats {
    private Formats() {}

    static Serializer<SpecificRecord> serializer(String format, String registry) {
        if (format.equals("single-object")) return new SingleObject.Out();
        if (format.equals("registry")) return Registry.serializer(registry);
        throw new IllegalArgumentException("unknown --format " + format + " (single-object, registry)");
    }

    static Deserializer<Prediction> deserializer(String format, String registry) {
        if (format.equals("single-object")) return new SingleObject.In();
        if (format.equals("registry")) return Registry.deserializer(registry);
        throw new IllegalArgumentException("unknown --format " + format + " (single-object, registry)");
    }
}
