"""`python -m bench` (from the repository root): how fast is the pipeline, measured against what it
competes with, in one run. It drives the daemon through its public interfaces only: the `Daemon` API
(a loaded model passed in, an `Observer` told of deliveries and writes), the metrics in the
prometheus registry, and the `ingestor run` command. It is not part of the installed package.

All variants run in this one process, on the same device, with the same precision and the same
already-loaded, warmed-up model (loading is never timed):

  (a) plain    `SentenceTransformer.encode` over the whole corpus at its best batch size: 16, 32,
               64 and 128 (GPU: 32 to 256) are tried on a subset, the best two on the whole
               corpus; the best once more after (d). The fastest whole-corpus run counts (a
               shared machine slows some runs). `encode` sorts by length itself: the ceiling.
  (b) naive    the loop a tutorial writes: KafkaConsumer.poll(max_records=64) → encode(texts in
               arrival order, batch_size=64) → MilvusClient.insert → consumer.commit().
  (c) pipeline the full daemon, in-process (`Daemon(until_caught_up=True)`), through real Kafka,
               Redis and Milvus Lite: fresh topic, group, Milvus Lite file and Redis key prefix.
  (d) warm     (c) again on as many records, half of them repeating texts (c) embedded (new ids,
               so their vectors come from the cache), half new texts from the unused part of the
               corpus (or, if the corpus has none left, (c)'s texts with " (revised)" appended).
  (e) steady   ~20 records/s for `--steady-seconds` into a running daemon; p50/p99 of Kafka record
               timestamp → acknowledged Milvus write, against `batch.max_wait_ms` + 500 ms.
  (f) ceiling  (c) on four times as many records with the forward pass replaced by a constant
               vector (tokenising, padding, Redis, Milvus and Kafka all real): what the pipeline
               around the model can carry on this machine. Where (f) < (a), the device would wait
               on the pipeline, and (f)'s stage shares say on which stage.

Throughput of (b)–(d) runs from the first record handed over by Kafka to the last acknowledged
Milvus write (group join and the daemon's start-up are reported apart, not timed). Tokens are the
model tokenizer's count after truncation, special tokens included, padding excluded — one count
per corpus, the same for every variant. With chunking on (the default) every variant embeds the
same texts, each record's chunks as the daemon cuts them ((a) and (b) get them cut beforehand,
untimed), and every rate counts records: a record is done when all of its chunks are.

Corpus size: `--limit` records for (a)–(c); by default 1000 on a CPU and 2000 on a GPU, in either
case at most two thirds of the corpus, so that (d) finds unused texts for its new half.

`--compare-precision P` runs a different, service-free bench instead: plain encode of the corpus
in torch fp32 and in P, each at its best batch size; throughput ratio and min/mean cosine between
them. P is a torch precision (fp16, bf16) or a backend with its precision (onnx, onnx-int8,
openvino, openvino-bf16, openvino-int8; those run on the CPU, so both sides then do). Loading,
and exporting a backend's weights the first time, is not timed.

Two more modes run instead of (a)-(f): `--sink-rate`, the sink's own write rate alone (no Kafka,
model or Redis; `variants.sink_rate`), and `--workers-per-device 1,2,4`, (c) through `ingestor run --devices
D --workers-per-device K` as deployed, for each K (`bench.workers`). `--cycles N` makes any of them run on
the corpus N times over, each cycle's texts distinct (`bench.corpus.cycled`).

With chunking on (`chunking.enabled`), the daemon writes one entity per chunk: the bench counts
Milvus's rows as entities and checks them by record (`doc_id`), each record's chunks whole and once.

The tests use its corpora (`bench.corpus`) and its reader of a collection (`bench.milvus`).
"""
