package kafka

import (
	"context"
	"fmt"
	"net"
	"time"

	kgo "github.com/segmentio/kafka-go"
)

// OffsetReader asks the brokers for the next offset each partition will
// assign (its high watermark), keeping its connections between calls. It
// is what status reads Kafka with; it is safe for concurrent use.
type OffsetReader struct {
	brokers []string
	tr      *kgo.Transport
	c       *kgo.Client
}

// NewOffsetReader returns a reader whose every dial and request is bounded
// by timeout, connecting with sec (TLS/SASL or plaintext). It does not contact the brokers.
func NewOffsetReader(brokers []string, sec Security, timeout time.Duration, clientID string) *OffsetReader {
	tr := sec.Secure(&kgo.Transport{
		Dial:        (&net.Dialer{Timeout: timeout}).DialContext,
		DialTimeout: timeout,
		IdleTimeout: time.Minute,
		MetadataTTL: 10 * time.Second,
		ClientID:    clientID,
	})
	return &OffsetReader{brokers: brokers, tr: tr, c: &kgo.Client{Addr: kgo.TCP(brokers...), Transport: tr, Timeout: timeout}}
}

// HighWatermarks returns, for each topic of partitions (topic → partition
// count), the next offset of each of its partitions 0..n-1.
func (r *OffsetReader) HighWatermarks(ctx context.Context, partitions map[string]int) (map[string]map[int32]int64, error) {
	req := &kgo.ListOffsetsRequest{Topics: map[string][]kgo.OffsetRequest{}}
	for topic, n := range partitions {
		for p := 0; p < n; p++ {
			req.Topics[topic] = append(req.Topics[topic], kgo.LastOffsetOf(p))
		}
	}
	resp, err := r.c.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("listing offsets at %v: %w", r.brokers, err)
	}
	out := map[string]map[int32]int64{}
	for topic := range partitions {
		hw := map[int32]int64{}
		for _, po := range resp.Topics[topic] {
			if po.Error != nil {
				return nil, fmt.Errorf("offsets of %s partition %d: %w", topic, po.Partition, po.Error)
			}
			hw[int32(po.Partition)] = po.LastOffset
		}
		out[topic] = hw
	}
	return out, nil
}

// Close drops the idle connections.
func (r *OffsetReader) Close() { r.tr.CloseIdleConnections() }
