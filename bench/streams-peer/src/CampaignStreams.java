// The follow-on rule of the benchmark as a Kafka Streams application: what a team would build
// on Kafka Streams instead of running the connector. It reads the same topics and bytes
// (Avro single-object encoding, schemas/*.avsc) and writes send-commands in the same encoding.
//
// The rule (the README's abandoned-cart example, as the benchmark publishes it): a
// PUSH_RECEIVED on campaign `abandoned-cart` schedules the follow-on `abandoned-cart-email`
// after --delay-s; a purchase, or a PUSH_DIRECT_OPEN on `abandoned-cart`, with
// triggered_at <= t < due_at cancels it; a repeat trigger while pending is ignored
// (KEEP_FIRST); a trigger less than --reeligible-s after the last send's due time is ignored.
// Exceptions are applied before triggers, and a user's due send fires before the user's next
// event is looked at, as the connector does.
//
//   campaign-interactions ─┐                  ┌─ users (RocksDB): user -> pending send, receipt
//                          ├─► FollowOnRule ──┤  due (RocksDB): due_at(8 bytes BE) ++ user -> ()
//   user-events ───────────┘        │         └─ both with changelog topics (exactly-once v2)
//                                   └─► send-commands
//
// Due sends fire from two punctuators: by stream time (the task's event time), and by the wall
// clock, but the latter only when the task looks caught up — the consumer reports no lag on
// every input partition of the task *and* the task processed no record since the last tick
// or its stream time is within two ticks of the wall clock (live traffic).
// Kafka Streams has no "caught up" signal; zero consumer lag alone is not one (fetched records
// may still wait in the task's buffers), and firing by the wall clock during a backlog would
// send before a cancelling exception still in the backlog is read.
//
// Usage: java -cp "$(scripts/java/streams-peer.sh)" CampaignStreams --bootstrap HOST:PORT
//          --application-id ID --interactions T --user-events T --output T --schemas DIR
//          --state-dir DIR [--commit-ms 100] [--threads 1] [--delay-s 86400]
//          [--reeligible-s 86400] [--punctuate-ms 100] [--linger-ms 50] [--compression lz4] [--instance-id ID]
// Prints `ready at=<epoch ms> pending=<n>` once every local store is restored, and runs until
// SIGTERM (closes cleanly).

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.LagInfo;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.apache.kafka.streams.state.Stores;

public final class CampaignStreams {
  static final String FOLLOW_ON = "abandoned-cart-email";
  static final String TRIGGER_CAMPAIGN = "abandoned-cart";
  static final String USERS = "users";
  static final String DUE = "due";

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = parse(argv);
    Settings s = new Settings(args);
    Topology topology = topology(s);
    KafkaStreams streams = new KafkaStreams(topology, config(s, args));
    Lag.streams = streams;
    CountDownLatch done = new CountDownLatch(1);
    streams.setStateListener((now, before) -> {
      System.out.println("state " + now + " at=" + System.currentTimeMillis());
      if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
        done.countDown();
      }
    });
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(60));
      done.countDown();
    }));
    streams.start();
    Thread ready = new Thread(() -> reportReady(streams), "ready");
    ready.setDaemon(true);
    ready.start();
    done.await();
  }

  static Map<String, String> parse(String[] argv) {
    Map<String, String> args = new HashMap<>();
    for (int i = 0; i < argv.length; i++) {
      if (!argv[i].startsWith("--") || i + 1 >= argv.length) {
        System.err.println("usage: see the comment at the top of CampaignStreams.java; bad argument " + argv[i]);
        System.exit(2);
      }
      args.put(argv[i].substring(2), argv[++i]);
    }
    return args;
  }

  static String required(Map<String, String> args, String key) {
    String v = args.get(key);
    if (v == null) {
      System.err.println("missing --" + key);
      System.exit(2);
    }
    return v;
  }

  /** Everything the rule and the topology need, parsed once. */
  static final class Settings {
    final String interactions, userEvents, output, stateDir;
    final long delayMs, reeligibleMs, punctuateMs;
    final Schema interactionSchema, userEventSchema, sendCommandSchema;

    Settings(Map<String, String> args) throws IOException {
      interactions = required(args, "interactions");
      userEvents = required(args, "user-events");
      output = required(args, "output");
      stateDir = required(args, "state-dir");
      delayMs = 1000L * Long.parseLong(args.getOrDefault("delay-s", "86400"));
      reeligibleMs = 1000L * Long.parseLong(args.getOrDefault("reeligible-s", "86400"));
      punctuateMs = Long.parseLong(args.getOrDefault("punctuate-ms", "100"));
      File dir = new File(required(args, "schemas"));
      interactionSchema = new Schema.Parser().parse(new File(dir, "interaction.avsc"));
      userEventSchema = new Schema.Parser().parse(new File(dir, "user_event.avsc"));
      sendCommandSchema = new Schema.Parser().parse(new File(dir, "send_command.avsc"));
    }
  }

  static Properties config(Settings s, Map<String, String> args) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, required(args, "application-id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(args, "bootstrap"));
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, args.getOrDefault("commit-ms", "100"));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, args.getOrDefault("threads", "1"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, s.stateDir);
    p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // Static membership, as the connector has by default: a restarted instance takes its
    // tasks back at once instead of waiting out the session timeout of its former self.
    String instance = args.get("instance-id");
    if (instance != null) {
      p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), instance);
    }
    // The connector's producer settings: 50 ms linger (Kafka Streams' own default is 100 ms)
    // and LZ4-compressed batches (its default: none).
    p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), args.getOrDefault("linger-ms", "50"));
    p.put(StreamsConfig.producerPrefix(ProducerConfig.COMPRESSION_TYPE_CONFIG), args.getOrDefault("compression", "lz4"));
    return p;
  }

  static Topology topology(Settings s) {
    Topology t = new Topology();
    t.addSource("interactions", Serdes.String().deserializer(), Serdes.ByteArray().deserializer(), s.interactions);
    t.addSource("user-events", Serdes.String().deserializer(), Serdes.ByteArray().deserializer(), s.userEvents);
    t.addProcessor("rule", () -> new FollowOnRule(s), "interactions", "user-events");
    t.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(USERS), Serdes.String(), Serdes.ByteArray())
        .withCachingEnabled(), "rule");
    t.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(DUE), Serdes.Bytes(), Serdes.ByteArray())
        .withCachingEnabled(), "rule");
    t.addSink("send-commands", s.output, Serdes.String().serializer(), Serdes.ByteArray().serializer(), "rule");
    return t;
  }

  /** Waits until every local store is restored and queryable, then prints the pending count. */
  static void reportReady(KafkaStreams streams) {
    while (true) {
      try {
        Thread.sleep(50);
        if (streams.state() != KafkaStreams.State.RUNNING) {
          continue;
        }
        boolean restored = true;
        for (Map<Integer, LagInfo> byPartition : streams.allLocalStorePartitionLags().values()) {
          for (LagInfo lag : byPartition.values()) {
            restored &= lag.offsetLag() == 0;
          }
        }
        if (!restored) {
          continue;
        }
        ReadOnlyKeyValueStore<Bytes, byte[]> due =
            streams.store(StoreQueryParameters.fromNameAndType(DUE, QueryableStoreTypes.keyValueStore()));
        long at = System.currentTimeMillis();
        long pending = 0;
        try (KeyValueIterator<Bytes, byte[]> it = due.all()) {
          while (it.hasNext()) {
            it.next();
            pending++;
          }
        }
        System.out.println("ready at=" + at + " pending=" + pending);
        return;
      } catch (InterruptedException e) {
        return;
      } catch (RuntimeException e) {
        // Stores are not queryable while a rebalance or restore is under way: ask again.
      }
    }
  }

  /** Consumer lag of the input partitions, read from the client metrics (refreshed at most every 50 ms). */
  static final class Lag {
    static volatile KafkaStreams streams;
    private static long readAt;
    private static Map<String, Double> lags = Map.of();

    static synchronized boolean caughtUp(Set<String> topics, int partition) {
      KafkaStreams s = streams;
      if (s == null) {
        return false;
      }
      long now = System.currentTimeMillis();
      if (now - readAt >= 50) {
        Map<String, Double> fresh = new HashMap<>();
        for (Map.Entry<MetricName, ? extends Metric> e : s.metrics().entrySet()) {
          MetricName n = e.getKey();
          if (!n.name().equals("records-lag") || !n.group().equals("consumer-fetch-manager-metrics")) {
            continue;
          }
          String topic = n.tags().get("topic");
          String p = n.tags().get("partition");
          Object v = e.getValue().metricValue();
          if (topic != null && p != null && v instanceof Number) {
            fresh.merge(topic + "/" + p, ((Number) v).doubleValue(), Math::max);
          }
        }
        lags = fresh;
        readAt = now;
      }
      for (String topic : topics) {
        Double lag = lags.get(topic + "/" + partition);
        if (lag == null || !(lag == 0.0)) {
          return false;
        }
      }
      return true;
    }
  }

  /** A user's state: at most one pending send of the follow-on, and the last send's due time. */
  static final class UserState {
    boolean pending;
    long triggeredAt, dueAt;
    String triggerEventId = "";
    boolean received;
    long lastSentAt;

    static UserState read(byte[] bytes) {
      UserState u = new UserState();
      if (bytes == null) {
        return u;
      }
      ByteBuffer b = ByteBuffer.wrap(bytes);
      byte flags = b.get();
      if ((flags & 1) != 0) {
        u.pending = true;
        u.triggeredAt = b.getLong();
        u.dueAt = b.getLong();
        byte[] id = new byte[b.getShort() & 0xffff];
        b.get(id);
        u.triggerEventId = new String(id, StandardCharsets.UTF_8);
      }
      if ((flags & 2) != 0) {
        u.received = true;
        u.lastSentAt = b.getLong();
      }
      return u;
    }

    /** The value to store, or null when there is nothing to keep. */
    byte[] write() {
      if (!pending && !received) {
        return null;
      }
      byte[] id = triggerEventId.getBytes(StandardCharsets.UTF_8);
      ByteBuffer b = ByteBuffer.allocate(1 + (pending ? 18 + id.length : 0) + (received ? 8 : 0));
      b.put((byte) ((pending ? 1 : 0) | (received ? 2 : 0)));
      if (pending) {
        b.putLong(triggeredAt).putLong(dueAt).putShort((short) id.length).put(id);
      }
      if (received) {
        b.putLong(lastSentAt);
      }
      return b.array();
    }
  }

  /** Big-endian due time first, so that keys sort by due time (event times are positive). */
  static Bytes dueKey(long dueAt, String user) {
    byte[] u = user.getBytes(StandardCharsets.UTF_8);
    return Bytes.wrap(ByteBuffer.allocate(8 + u.length).putLong(dueAt).put(u).array());
  }

  static final class FollowOnRule implements Processor<String, byte[], String, byte[]> {
    private static final long LOOKAHEAD_MS = 60_000;
    private final Settings s;
    private final BinaryMessageDecoder<GenericRecord> interactionDecoder;
    private final BinaryMessageDecoder<GenericRecord> userEventDecoder;
    private final BinaryMessageEncoder<GenericRecord> sendCommandEncoder;
    private final Schema triggerSchema;
    private final GenericData.EnumSymbol email, pushReceived;
    private ProcessorContext<String, byte[]> context;
    private KeyValueStore<String, byte[]> users;
    private KeyValueStore<Bytes, byte[]> due;
    private Set<String> inputs;
    private GenericRecord reuseInteraction, reuseUserEvent;
    /**
     * Every due key below this has been fired (or was never there): scans start here. Scanning
     * from 0 would walk over the tombstones of every send fired or cancelled so far (RocksDB
     * keeps them until compaction), which makes each scan slower than the last.
     */
    private long scanFrom = 0;
    /**
     * No due key is below this (a lower bound, learnt by the last scan and lowered by every new
     * key), so a punctuation before it needs no scan: with event time moving faster than the
     * punctuation interval, stream-time punctuation runs after nearly every record.
     */
    private long nextDue = Long.MIN_VALUE;
    /** Whether a record was processed since the last wall-clock tick. */
    private boolean busy = true;

    FollowOnRule(Settings s) {
      this.s = s;
      interactionDecoder = new BinaryMessageDecoder<>(GenericData.get(), s.interactionSchema);
      userEventDecoder = new BinaryMessageDecoder<>(GenericData.get(), s.userEventSchema);
      sendCommandEncoder = new BinaryMessageEncoder<>(GenericData.get(), s.sendCommandSchema);
      triggerSchema = s.sendCommandSchema.getField("trigger").schema();
      email = new GenericData.EnumSymbol(s.sendCommandSchema.getField("channel").schema(), "EMAIL");
      pushReceived = new GenericData.EnumSymbol(triggerSchema.getField("kind").schema(), "PUSH_RECEIVED");
    }

    @Override
    public void init(ProcessorContext<String, byte[]> context) {
      this.context = context;
      users = context.getStateStore(USERS);
      due = context.getStateStore(DUE);
      inputs = Set.of(s.interactions, s.userEvents);
      Duration every = Duration.ofMillis(s.punctuateMs);
      context.schedule(every, PunctuationType.STREAM_TIME, this::fireUntil);
      int partition = context.taskId().partition();
      context.schedule(every, PunctuationType.WALL_CLOCK_TIME, now -> {
        // Caught up: nothing left to fetch, and either nothing processed since the last tick
        // or stream time within two ticks of the wall clock (live traffic).
        boolean current = !busy || context.currentStreamTimeMs() >= now - 2 * s.punctuateMs;
        if (current && Lag.caughtUp(inputs, partition)) {
          fireUntil(now);
        }
        busy = false;
      });
    }

    @Override
    public void process(Record<String, byte[]> record) {
      busy = true;
      if (record.value() == null) {
        return;
      }
      String topic = context.recordMetadata().map(m -> m.topic()).orElse("");
      String user, eventId;
      long t;
      boolean exception, trigger;
      try {
        if (topic.equals(s.interactions)) {
          GenericRecord r = interactionDecoder.decode(record.value(), reuseInteraction);
          reuseInteraction = r;
          user = r.get("user_id").toString();
          eventId = r.get("event_id").toString();
          t = (Long) r.get("occurred_at");
          boolean onTriggerCampaign = r.get("campaign_id").toString().equals(TRIGGER_CAMPAIGN);
          String kind = r.get("kind").toString();
          exception = onTriggerCampaign && kind.equals("PUSH_DIRECT_OPEN");
          trigger = onTriggerCampaign && kind.equals("PUSH_RECEIVED");
        } else {
          GenericRecord r = userEventDecoder.decode(record.value(), reuseUserEvent);
          reuseUserEvent = r;
          user = r.get("user_id").toString();
          eventId = r.get("event_id").toString();
          t = (Long) r.get("occurred_at");
          exception = r.get("type").toString().equals("PURCHASE");
          trigger = false;
        }
      } catch (IOException | RuntimeException e) {
        // Bad input is not what this application is measured on: skip it.
        return;
      }
      if (!exception && !trigger) {
        return;
      }
      byte[] before = users.get(user);
      UserState u = UserState.read(before);
      boolean changed = false;
      // The user's send due at or before t fires first.
      if (u.pending && u.dueAt <= t) {
        send(user, u, System.currentTimeMillis());
        changed = true;
      }
      if (exception && u.pending && u.triggeredAt <= t && t < u.dueAt) {
        due.delete(dueKey(u.dueAt, user));
        u.pending = false;
        changed = true;
      }
      if (trigger) {
        if (u.received && t < u.lastSentAt + s.reeligibleMs) {
          // not re-eligible yet
        } else if (u.pending) {
          // KEEP_FIRST: already pending
        } else {
          u.pending = true;
          u.triggeredAt = t;
          u.dueAt = t + s.delayMs;
          u.triggerEventId = eventId;
          due.put(dueKey(u.dueAt, user), new byte[0]);
          scanFrom = Math.min(scanFrom, u.dueAt);
          nextDue = Math.min(nextDue, u.dueAt);
          changed = true;
        }
      }
      // A receipt that no longer blocks anything is dropped.
      if (!u.pending && u.received && t >= u.lastSentAt + s.reeligibleMs) {
        u.received = false;
        changed = true;
      }
      if (changed) {
        byte[] after = u.write();
        if (after == null) {
          if (before != null) {
            users.delete(user);
          }
        } else {
          users.put(user, after);
        }
      }
    }

    /** Fires every send due at or before `limit`. */
    private void fireUntil(long limit) {
      if (limit < scanFrom || limit < nextDue) {
        return;
      }
      List<Bytes> keys = new ArrayList<>();
      try (KeyValueIterator<Bytes, byte[]> it = due.range(dueKey(scanFrom, ""), dueKey(limit + 1, ""))) {
        while (it.hasNext()) {
          keys.add(it.next().key);
        }
      }
      long now = System.currentTimeMillis();
      for (Bytes key : keys) {
        byte[] k = key.get();
        String user = new String(k, 8, k.length - 8, StandardCharsets.UTF_8);
        UserState u = UserState.read(users.get(user));
        if (u.pending && u.dueAt <= limit) {
          send(user, u, now);
          users.put(user, u.write());
        } else {
          due.delete(key);
        }
      }
      scanFrom = limit + 1;
      // A lower bound of the next due key, looked up in a bounded window: a range over a
      // cached store copies the cache's keys in the range, and every iterator registers
      // metrics, so scans are kept few and narrow.
      nextDue = limit + 1 + LOOKAHEAD_MS;
      try (KeyValueIterator<Bytes, byte[]> it = due.range(dueKey(limit + 1, ""), dueKey(nextDue, ""))) {
        if (it.hasNext()) {
          nextDue = ByteBuffer.wrap(it.next().key.get()).getLong();
        }
      }
    }

    /** Emits the send-command of the user's pending send and records the receipt. */
    private void send(String user, UserState u, long now) {
      GenericRecord trigger = new GenericData.Record(triggerSchema);
      trigger.put("campaign_id", TRIGGER_CAMPAIGN);
      trigger.put("kind", pushReceived);
      trigger.put("event_id", u.triggerEventId);
      trigger.put("occurred_at", u.triggeredAt);
      GenericRecord c = new GenericData.Record(s.sendCommandSchema);
      c.put("command_id", FOLLOW_ON + "/" + user + "/" + u.triggerEventId);
      c.put("user_id", user);
      c.put("campaign_id", FOLLOW_ON);
      c.put("campaign_version", 1L);
      c.put("channel", email);
      c.put("template_id", "cart-reminder-v3");
      c.put("payload", Map.of("subject", "Your cart is waiting for you"));
      c.put("trigger", trigger);
      c.put("due_at", u.dueAt);
      c.put("emitted_at", now);
      byte[] bytes;
      try {
        ByteBuffer b = sendCommandEncoder.encode(c);
        bytes = new byte[b.remaining()];
        b.get(bytes);
      } catch (IOException e) {
        throw new IllegalStateException("encoding a send-command", e);
      }
      context.forward(new Record<>(user, bytes, now));
      due.delete(dueKey(u.dueAt, user));
      u.pending = false;
      u.received = true;
      u.lastSentAt = u.dueAt;
    }
  }
}
