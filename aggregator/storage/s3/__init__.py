"""Posts as S3 objects (`OUTPUT_URI=s3://bucket/prefix`), split by job:

- `config`: the settings as a frozen S3Config, checked (NotConfigured) without the network;
- `client`: the boto3 client built from it, secrets redacted, the bucket checked (HeadBucket);
- `objects`: object keys, locations and metadata, the conditional PUT (exactly once), manifests;
- `manifests`: the run's local manifest journal, and re-sending those earlier runs left;
- `storage`: S3PostStorage, the reactor side the write pipeline drives (POST_STORAGES["s3"]).

Layout, all derived from the article key, never the title:

- `{prefix}/{site}/{article key}.md`: the post, byte for byte what the file writer writes;
- `{prefix}/_manifests/{UTC timestamp}-{spider}-{run id}.jsonl`: one JSON line per object a run
  wrote, so a consumer finds new posts by listing `_manifests/` after the last one it read.
"""
