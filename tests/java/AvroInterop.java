// A JVM producer and consumer of the connector's topics that uses only the Apache Avro Java
// library (and the Kafka Java client for the broker), driven by tests/java_interop.rs.
//
// Records travel as Avro's JSON encoding (unions as {"string": "x"}), one per line, so that
// the Rust test can build and compare them without a Java code generator. Every command reads
// tab-separated lines on stdin and writes one line per input line on stdout; a record that
// cannot be read is written as `ERROR<TAB>message` and the run goes on.
//
//   fingerprints FILE...                 per schema file: file, full name, the Java library's
//                                        CRC-64-AVRO fingerprint and Parsing Canonical Form (JSON)
//   canonical                            stdin: a schema's JSON text per line (\n-free);
//                                        stdout: fingerprint TAB canonical form
//   encode                               stdin: SCHEMA_FILE TAB AVRO_JSON
//                                        stdout: hex of BinaryMessageEncoder's single-object bytes
//   decode STORE_FILE...                 stdin: READER_SCHEMA_FILE TAB HEX
//                                        stdout: AVRO_JSON read by BinaryMessageDecoder with a
//                                        SchemaStore holding the store files (writer schemas)
//   confluent-encode REGISTRY_URL        stdin: SUBJECT TAB SCHEMA_FILE TAB AVRO_JSON
//                                        registers the schema (POST /subjects/S/versions) and
//                                        writes 00 | id (4, big-endian) | datum, as hex
//   confluent-decode REGISTRY_URL        stdin: READER_SCHEMA_FILE TAB HEX
//                                        fetches the writer schema (GET /schemas/ids/N), resolves
//   produce BOOTSTRAP                    stdin: TOPIC TAB KEY TAB SCHEMA_FILE TAB AVRO_JSON
//                                        single-object values, idempotent producer, flushed
//   consume BOOTSTRAP STORE_FILE... -- TOPIC=READER_SCHEMA_FILE...
//                                        reads every listed topic from the beginning to its end
//                                        (read_committed, so up to the last stable offset), each
//                                        record with every reader schema listed for its topic;
//                                        stdout: TOPIC TAB READER_SCHEMA_FILE TAB KEY TAB
//                                        AVRO_JSON (or TOMBSTONE, or ERROR TAB message)
//
// Registry requests carry `Authorization: Basic …` when REGISTRY_USER_INFO (user:password)
// is set in the environment, as Confluent's `basic.auth.user.info` does.

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.io.JsonEncoder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.avro.message.SchemaStore;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public final class AvroInterop {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final PrintStream OUT =
            new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true, StandardCharsets.UTF_8);

    public static void main(String[] args) throws Exception {
        if (args.length == 0) {
            usage("no command");
        }
        String[] rest = java.util.Arrays.copyOfRange(args, 1, args.length);
        switch (args[0]) {
            case "fingerprints" -> fingerprints(rest);
            case "canonical" -> canonical();
            case "encode" -> encode();
            case "decode" -> decode(rest);
            case "confluent-encode" -> confluentEncode(need(rest, 1)[0]);
            case "confluent-decode" -> confluentDecode(need(rest, 1)[0]);
            case "produce" -> produce(need(rest, 1)[0]);
            case "consume" -> consume(rest);
            default -> usage("unknown command " + args[0]);
        }
    }

    private static void usage(String why) {
        System.err.println("AvroInterop: " + why
                + "; commands: fingerprints, canonical, encode, decode, confluent-encode, confluent-decode, produce, consume");
        System.exit(2);
    }

    private static String[] need(String[] args, int n) {
        if (args.length < n) {
            usage("expected " + n + " argument(s)");
        }
        return args;
    }

    // ---------------------------------------------------------------------------------
    // Schemas

    private static final Map<String, Schema> SCHEMAS = new HashMap<>();

    /** Each file parsed once, by its own parser (files may define the same names). */
    private static Schema schema(String path) throws IOException {
        Schema schema = SCHEMAS.get(path);
        if (schema == null) {
            schema = new Schema.Parser().parse(new File(path));
            SCHEMAS.put(path, schema);
        }
        return schema;
    }

    private static void fingerprints(String[] files) throws IOException {
        for (String file : files) {
            Schema schema = schema(file);
            ObjectNode line = JSON.createObjectNode();
            line.put("file", file);
            line.put("name", schema.getFullName());
            line.put("fingerprint", SchemaNormalization.parsingFingerprint64(schema));
            line.put("canonical", SchemaNormalization.toParsingForm(schema));
            OUT.println(JSON.writeValueAsString(line));
        }
    }

    private static void canonical() throws IOException {
        eachLine(1, fields -> {
            Schema schema = new Schema.Parser().parse(fields[0]);
            return SchemaNormalization.parsingFingerprint64(schema) + "\t"
                    + SchemaNormalization.toParsingForm(schema);
        });
    }

    // ---------------------------------------------------------------------------------
    // Single-object encoding

    private static void encode() throws IOException {
        Map<Schema, BinaryMessageEncoder<GenericRecord>> encoders = new HashMap<>();
        eachLine(2, fields -> {
            Schema schema = schema(fields[0]);
            GenericRecord record = fromJson(schema, fields[1]);
            BinaryMessageEncoder<GenericRecord> encoder = encoders.computeIfAbsent(
                    schema, s -> new BinaryMessageEncoder<>(GenericData.get(), s));
            return hex(encoder.encode(record));
        });
    }

    private static SchemaStore.Cache store(String[] files) throws IOException {
        SchemaStore.Cache store = new SchemaStore.Cache();
        for (String file : files) {
            store.addSchema(schema(file));
        }
        return store;
    }

    private static void decode(String[] storeFiles) throws IOException {
        SchemaStore.Cache store = store(storeFiles);
        Map<Schema, BinaryMessageDecoder<GenericRecord>> decoders = new HashMap<>();
        eachLine(2, fields -> {
            Schema reader = schema(fields[0]);
            BinaryMessageDecoder<GenericRecord> decoder = decoders.computeIfAbsent(
                    reader, r -> new BinaryMessageDecoder<>(GenericData.get(), r, store));
            GenericRecord record = decoder.decode(unhex(fields[1]));
            return toJson(reader, record);
        });
    }

    // ---------------------------------------------------------------------------------
    // Confluent wire format against a schema registry (what KafkaAvroSerializer and
    // KafkaAvroDeserializer put on the wire)

    private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private static final String REGISTRY_JSON = "application/vnd.schemaregistry.v1+json";

    private static HttpRequest.Builder registryRequest(String url) {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(url))
                .timeout(Duration.ofSeconds(10))
                .header("Accept", REGISTRY_JSON);
        String userInfo = System.getenv("REGISTRY_USER_INFO");
        if (userInfo != null && !userInfo.isEmpty()) {
            String token = Base64.getEncoder().encodeToString(userInfo.getBytes(StandardCharsets.UTF_8));
            request.header("Authorization", "Basic " + token);
        }
        return request;
    }

    private static JsonNode registryCall(HttpRequest request) throws IOException, InterruptedException {
        HttpResponse<String> response = HTTP.send(request, HttpResponse.BodyHandlers.ofString());
        if (response.statusCode() != 200) {
            throw new IOException(request.method() + " " + request.uri() + ": HTTP " + response.statusCode()
                    + ": " + response.body());
        }
        return JSON.readTree(response.body());
    }

    private static void confluentEncode(String registry) throws IOException {
        Map<String, Integer> ids = new HashMap<>();
        eachLine(3, fields -> {
            Schema schema = schema(fields[1]);
            String key = fields[0] + "\n" + fields[1];
            Integer id = ids.get(key);
            if (id == null) {
                ObjectNode body = JSON.createObjectNode();
                body.put("schema", schema.toString());
                HttpRequest request = registryRequest(registry + "/subjects/" + fields[0] + "/versions")
                        .header("Content-Type", REGISTRY_JSON)
                        .POST(HttpRequest.BodyPublishers.ofString(JSON.writeValueAsString(body)))
                        .build();
                id = registryCall(request).get("id").asInt();
                ids.put(key, id);
            }
            GenericRecord record = fromJson(schema, fields[2]);
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            out.write(0);
            out.write(ByteBuffer.allocate(4).putInt(id).array());
            BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, null);
            new GenericDatumWriter<GenericRecord>(schema).write(record, encoder);
            encoder.flush();
            return hex(ByteBuffer.wrap(out.toByteArray()));
        });
    }

    private static void confluentDecode(String registry) throws IOException {
        Map<Integer, Schema> writers = new HashMap<>();
        eachLine(2, fields -> {
            Schema reader = schema(fields[0]);
            ByteBuffer bytes = unhex(fields[1]);
            if (bytes.remaining() < 5 || bytes.get() != 0) {
                throw new IOException("not the Confluent wire format");
            }
            int id = bytes.getInt();
            Schema writer = writers.get(id);
            if (writer == null) {
                HttpRequest request = registryRequest(registry + "/schemas/ids/" + id).GET().build();
                writer = new Schema.Parser().parse(registryCall(request).get("schema").asText());
                writers.put(id, writer);
            }
            byte[] datum = new byte[bytes.remaining()];
            bytes.get(datum);
            GenericDatumReader<GenericRecord> datumReader = new GenericDatumReader<>(writer, reader);
            GenericRecord record = datumReader.read(null, DecoderFactory.get().binaryDecoder(datum, null));
            return toJson(reader, record);
        });
    }

    // ---------------------------------------------------------------------------------
    // Kafka

    private static void produce(String bootstrap) throws IOException {
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        Map<Schema, BinaryMessageEncoder<GenericRecord>> encoders = new HashMap<>();
        try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(props)) {
            eachLine(4, fields -> {
                Schema schema = schema(fields[2]);
                BinaryMessageEncoder<GenericRecord> encoder = encoders.computeIfAbsent(
                        schema, s -> new BinaryMessageEncoder<>(GenericData.get(), s));
                ByteBuffer value = encoder.encode(fromJson(schema, fields[3]));
                byte[] bytes = new byte[value.remaining()];
                value.get(bytes);
                // Synchronous send: the order of the lines is the order in each partition.
                producer.send(new ProducerRecord<>(fields[0], fields[1], bytes)).get();
                return "sent";
            });
            producer.flush();
        }
    }

    private static void consume(String[] args) throws Exception {
        int split = java.util.Arrays.asList(args).indexOf("--");
        if (split < 1) {
            usage("consume BOOTSTRAP STORE_FILE... -- TOPIC=READER_SCHEMA_FILE...");
        }
        String bootstrap = args[0];
        SchemaStore.Cache store = store(java.util.Arrays.copyOfRange(args, 1, split));
        // Per topic, every reader schema to read its records with (a topic may be listed
        // more than once, to read it as an older and a newer consumer would).
        Map<String, List<String>> readers = new LinkedHashMap<>();
        Map<String, BinaryMessageDecoder<GenericRecord>> decoders = new HashMap<>();
        for (String spec : java.util.Arrays.copyOfRange(args, split + 1, args.length)) {
            String[] parts = spec.split("=", 2);
            if (parts.length != 2) {
                usage("expected TOPIC=READER_SCHEMA_FILE, got " + spec);
            }
            readers.computeIfAbsent(parts[0], t -> new ArrayList<>()).add(parts[1]);
            decoders.put(parts[1], new BinaryMessageDecoder<>(GenericData.get(), schema(parts[1]), store));
        }
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<String, byte[]> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> partitions = new ArrayList<>();
            for (String topic : readers.keySet()) {
                for (PartitionInfo p : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
                    partitions.add(new TopicPartition(topic, p.partition()));
                }
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            // With read_committed the end offsets are the last stable offsets: reading up to
            // them reads everything committed when the run began, and nothing is left pending.
            Map<TopicPartition, Long> end = consumer.endOffsets(partitions, Duration.ofSeconds(30));
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (!partitions.stream().allMatch(tp -> consumer.position(tp) >= end.get(tp))) {
                if (System.nanoTime() > deadline) {
                    throw new IOException("did not reach the end offsets " + end + " within 60 s");
                }
                for (ConsumerRecord<String, byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    for (String readerFile : readers.get(r.topic())) {
                        String line;
                        if (r.value() == null) {
                            line = "TOMBSTONE";
                        } else {
                            try {
                                GenericRecord record = decoders.get(readerFile).decode(r.value());
                                line = toJson(schema(readerFile), record);
                            } catch (Exception e) {
                                line = "ERROR\t" + oneLine(e);
                            }
                        }
                        OUT.println(r.topic() + "\t" + readerFile + "\t" + r.key() + "\t" + line);
                    }
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Helpers

    private interface LineAction {
        String apply(String[] fields) throws Exception;
    }

    /** Runs `action` on every stdin line split into `n` tab-separated fields. */
    private static void eachLine(int n, LineAction action) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            String[] fields = line.split("\t", n);
            String answer;
            try {
                if (fields.length != n) {
                    throw new IOException("expected " + n + " tab-separated fields in " + line);
                }
                answer = action.apply(fields);
            } catch (Exception e) {
                answer = "ERROR\t" + oneLine(e);
            }
            OUT.println(answer);
        }
    }

    private static String oneLine(Throwable e) {
        StringBuilder text = new StringBuilder(e.getClass().getSimpleName() + ": " + e.getMessage());
        for (Throwable cause = e.getCause(); cause != null; cause = cause.getCause()) {
            text.append(" / ").append(cause.getClass().getSimpleName()).append(": ").append(cause.getMessage());
        }
        return text.toString().replace('\n', ' ').replace('\t', ' ');
    }

    private static GenericRecord fromJson(Schema schema, String json) throws IOException {
        return new GenericDatumReader<GenericRecord>(schema)
                .read(null, DecoderFactory.get().jsonDecoder(schema, json));
    }

    private static String toJson(Schema schema, GenericRecord record) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        JsonEncoder encoder = EncoderFactory.get().jsonEncoder(schema, out);
        new GenericDatumWriter<GenericRecord>(schema).write(record, encoder);
        encoder.flush();
        return out.toString(StandardCharsets.UTF_8);
    }

    private static String hex(ByteBuffer buffer) {
        StringBuilder text = new StringBuilder();
        ByteBuffer view = buffer.duplicate();
        while (view.hasRemaining()) {
            text.append(String.format("%02x", view.get() & 0xff));
        }
        return text.toString();
    }

    private static ByteBuffer unhex(String text) {
        text = text.trim();
        byte[] bytes = new byte[text.length() / 2];
        for (int i = 0; i < bytes.length; i++) {
            bytes[i] = (byte) Integer.parseInt(text.substring(2 * i, 2 * i + 2), 16);
        }
        return ByteBuffer.wrap(bytes);
    }
}
