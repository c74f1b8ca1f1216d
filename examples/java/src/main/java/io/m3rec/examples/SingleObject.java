// SingleObject - Kafka serde for m3rec's default wire format, Avro single-object encoding
// (C3 01, the schema's 8-byte fingerprint, the datum), with the generated classes' own
// toByteBuffer() / fromByteBuffer(): no m3rec code involved.
package io.m3rec.examples;

import io.m3rec.events.Conversion;
import io.m3rec.events.Impression;
import io.m3rec.events.Prediction;
import io.m3rec.events.ScoreRequest;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import org.apache.avro.specific.SpecificRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serializer;

final class SingleObject {
    private SingleObject() {}

    /** Input records: each message carries the fingerprint of its own schema. */
    static final class Out implements Serializer<SpecificRecord> {
        @Override
        public byte[] serialize(String topic, SpecificRecord r) {
            try {
                ByteBuffer b;
                if (r instanceof Impression x) b = x.toByteBuffer();
                else if (r instanceof Conversion x) b = x.toByteBuffer();
                else if (r instanceof ScoreRequest x) b = x.toByteBuffer();
                else throw new IllegalArgumentException("not an m3rec input record: " + r.getSchema().getFullName());
                byte[] bytes = new byte[b.remaining()];
                b.get(bytes);
                return bytes;
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    /** Predictions; a message that is not one (wrong marker or fingerprint, bad datum) throws. */
    static final class In implements Deserializer<Prediction> {
        @Override
        public Prediction deserialize(String topic, byte[] data) {
            try {
                return Prediction.fromByteBuffer(ByteBuffer.wrap(data));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }
}
