package kafka

import (
	"context"
	"strconv"
)

// Headers a dead-letter message carries on top of the original's.
const (
	HeaderDLQReason          = "tandem-dlq-reason"
	HeaderDLQSourcePartition = "tandem-source-partition"
	HeaderDLQSourceOffset    = "tandem-source-offset"
	// HeaderStream and HeaderSchema are set by the ingest gateway on every
	// message: the stream name and Stream.SchemaVersion() it validated against.
	HeaderStream = "tandem-stream"
	HeaderSchema = "tandem-schema"
)

// DeadLetter is a message read from a stream topic that a consumer cannot
// use (it fails validation), with the reason.
type DeadLetter struct {
	Message Message // as fetched: Topic, Partition, Offset, Key, Value, Time, Headers
	Reason  string
}

// DLQTopic is the dead-letter topic of a stream topic; it equals
// schemas.Stream.DLQTopic() for the stream's topic.
func DLQTopic(topic string) string { return topic + ".dlq" }

// DeadLetterMessage is the message written for d: the original key, value and
// timestamp, the original headers plus the reason and source position.
func DeadLetterMessage(d DeadLetter) Message {
	orig := d.Message.Headers
	h := make(map[string]string, len(orig)+3)
	for k, v := range orig {
		h[k] = v
	}
	h[HeaderDLQReason] = d.Reason
	h[HeaderDLQSourcePartition] = strconv.FormatInt(int64(d.Message.Partition), 10)
	h[HeaderDLQSourceOffset] = strconv.FormatInt(d.Message.Offset, 10)
	return Message{
		Topic:   DLQTopic(d.Message.Topic),
		Key:     d.Message.Key,
		Value:   d.Message.Value,
		Time:    d.Message.Time,
		Headers: h,
	}
}

// DLQ writes dead letters to the ".dlq" topic of their source topic. It is
// safe for concurrent use. Callers count what they send (their own metric),
// and should write dead letters before committing past them, so a crash
// replays rather than loses them (a replay may write a letter twice; the
// source partition and offset headers identify repeats).
type DLQ struct {
	p *Producer
}

// NewDLQ returns a DLQ writer for the cluster.
func NewDLQ(brokers []string, opts ProducerOptions) (*DLQ, error) {
	p, err := NewProducer(brokers, opts)
	if err != nil {
		return nil, err
	}
	return &DLQ{p: p}, nil
}

// Send writes the letters and returns when all are acknowledged by all
// in-sync replicas. A message larger than the producer's limit cannot be
// written whole; it fails like any other write error.
func (d *DLQ) Send(ctx context.Context, letters ...DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	msgs := make([]Message, len(letters))
	for i, l := range letters {
		msgs[i] = DeadLetterMessage(l)
	}
	return d.p.Produce(ctx, msgs...)
}

// Close flushes and closes the writer.
func (d *DLQ) Close() error { return d.p.Close() }
