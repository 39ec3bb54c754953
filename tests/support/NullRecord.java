// Publishes one record with a null key and a null value, which kafka-python refuses to send but
// the Java client (and so real producers) can. Run with the broker's jars on the classpath:
//   java -cp "$INGESTOR_HOME/kafka/lib/*" NullRecord.java BOOTSTRAP TOPIC
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class NullRecord {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("acks", "all");
        try (KafkaProducer<byte[], byte[]> producer =
                 new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            producer.send(new ProducerRecord<>(args[1], null, null)).get();
        }
    }
}
