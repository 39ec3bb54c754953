"""`ingestor serve`, the query side: embeddings with the model, backend, precision and chunking
that filled the collection, and search over it, dynamically batched on one model thread.

| module | job |
|---|---|
| `server.py` | wiring: the model, the collection's identity (exit 2 on another), uvicorn |
| `app.py` | the routes and the answers in each API's shape (OpenAI, TEI, /search, health, metrics) |
| `requests.py` | request bodies: bounded, parsed, checked into one typed request per endpoint |
| `embeddings.py` | texts to vectors: request limits, tokenising, truncation, the Redis cache, admission |
| `queue.py` | admission by tokens and the batch cut of the daemon (`batching`); pure |
| `model_thread.py` | the one thread that runs the daemon's model stage over the queue's batches |
| `search.py` | the collection: opened with our identity, searched one result per record |
| `filters.py` | `/search`'s structured filter to a Milvus expression (through `expressions`); pure |
| `health.py`, `errors.py` | liveness and readiness rules; the error answered as `{error, type, detail}` |
"""
