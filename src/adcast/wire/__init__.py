"""What travels on the topics: Avro in the Confluent wire format (serde), and the hand-written
codecs of the stream tier's hot path, held byte-equal to fastavro by property tests."""
