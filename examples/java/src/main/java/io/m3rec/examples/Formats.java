// Formats - the value serdes by --format name: "avro" (Avro single-object encoding, the
// worker's default input.format/output.format).
package io.m3rec.examples;

import io.m3rec.events.Prediction;
import org.apache.avro.specific.SpecificRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serializer;

final class Formats {
    private Formats() {}

    static Serializer<SpecificRecord> serializer(String format, String registry) {
        if (format.equals("avro")) return new SingleObject.Out();
        throw new IllegalArgumentException("unknown --format " + format + " (avro)");
    }

    static Deserializer<Prediction> deserializer(String format, String registry) {
        if (format.equals("avro")) return new SingleObject.In();
        throw new IllegalArgumentException("unknown --format " + format + " (avro)");
    }
}
