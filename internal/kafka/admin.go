package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	kgo "github.com/segmentio/kafka-go"

	"github.com/tandem-analytics/tandem/schemas"
)

// DLQPartitions is the partition count of every dead-letter topic: they carry
// few messages and nobody needs them in key order across partitions.
const DLQPartitions = 1

// TopicSpec is one topic tandem needs.
type TopicSpec struct {
	Name              string
	Partitions        int
	ReplicationFactor int
}

// Topics lists the topics of cfg: each stream's topic and its dead-letter topic.
func Topics(cfg *schemas.Config) []TopicSpec {
	rf := cfg.Kafka.ReplicationFactor
	if rf <= 0 {
		rf = 1
	}
	var out []TopicSpec
	for _, s := range cfg.Streams {
		out = append(out,
			TopicSpec{Name: s.Topic, Partitions: s.Partitions, ReplicationFactor: rf},
			TopicSpec{Name: s.DLQTopic(), Partitions: DLQPartitions, ReplicationFactor: rf})
	}
	return out
}

// ErrTooFewPartitions is wrapped by EnsureTopics' error when a topic exists
// with fewer partitions than configured. tandem never adds partitions itself:
// doing so moves keys to other partitions and changes what every stored
// chunk holds, so it is an operator's decision.
var ErrTooFewPartitions = errors.New("topic has fewer partitions than configured")

// EnsureTopics creates every stream topic of cfg with its partitions and
// replication factor, and its ".dlq" topic, and returns once the cluster's
// metadata shows all of them with a leader for every partition. It is
// idempotent: an existing topic is checked, not changed. A topic with fewer
// partitions than configured is an error (ErrTooFewPartitions); more is
// accepted, since the configuration may simply be behind. It connects with
// the security of cfg.Kafka (TLS, SASL).
func EnsureTopics(ctx context.Context, brokers []string, cfg *schemas.Config) error {
	sec, err := NewSecurity(cfg.Kafka)
	if err != nil {
		return err
	}
	return EnsureTopicSpecs(ctx, brokers, sec, Topics(cfg))
}

// EnsureTopicSpecs is EnsureTopics for an explicit list of topics.
func EnsureTopicSpecs(ctx context.Context, brokers []string, sec Security, specs []TopicSpec) error {
	if len(brokers) == 0 {
		return errors.New("kafka: no broker addresses to create topics on")
	}
	if len(specs) == 0 {
		return nil
	}
	tr := sec.transport("tandem-admin")
	defer tr.CloseIdleConnections()
	c := &kgo.Client{Addr: kgo.TCP(brokers...), Transport: tr, Timeout: 10 * time.Second}

	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	existing, err := topicPartitions(ctx, c, names)
	if err != nil {
		// Name the listener type: a broker that refuses a password or a
		// certificate often just closes the connection (EOF), and the
		// operator needs to see which security tandem tried.
		return fmt.Errorf("%w (connecting over %s)", err, sec)
	}
	var create []kgo.TopicConfig
	var problems []string
	for _, s := range specs {
		n, ok := existing[s.Name]
		switch {
		case !ok:
			create = append(create, kgo.TopicConfig{Topic: s.Name, NumPartitions: s.Partitions, ReplicationFactor: s.ReplicationFactor})
		case n < s.Partitions:
			problems = append(problems, fmt.Sprintf("%s has %d partitions, the configuration says %d", s.Name, n, s.Partitions))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("kafka: %w: %s (add partitions yourself only if you accept that keys move; tandem does not do it)",
			ErrTooFewPartitions, strings.Join(problems, "; "))
	}
	if len(create) > 0 {
		res, err := c.CreateTopics(ctx, &kgo.CreateTopicsRequest{Topics: create})
		if err != nil {
			return fmt.Errorf("kafka: creating topics: %w", err)
		}
		for _, t := range create {
			// Another process may have created it between our metadata read
			// and our request: that is fine, the check below verifies it.
			if err := res.Errors[t.Topic]; err != nil && !errors.Is(err, kgo.TopicAlreadyExists) {
				return fmt.Errorf("kafka: creating topic %s (%d partitions, replication factor %d): %w",
					t.Topic, t.NumPartitions, t.ReplicationFactor, err)
			}
		}
	}
	return waitTopics(ctx, c, specs)
}

// topicPartitions returns the partition count of each named topic that exists.
func topicPartitions(ctx context.Context, c *kgo.Client, names []string) (map[string]int, error) {
	md, err := c.Metadata(ctx, &kgo.MetadataRequest{Topics: names})
	if err != nil {
		return nil, fmt.Errorf("kafka: reading metadata from %s: %w", c.Addr, err)
	}
	out := map[string]int{}
	for _, t := range md.Topics {
		if t.Error != nil {
			if errors.Is(t.Error, kgo.UnknownTopicOrPartition) {
				continue
			}
			return nil, fmt.Errorf("kafka: metadata of topic %s: %w", t.Name, t.Error)
		}
		out[t.Name] = len(t.Partitions)
	}
	return out, nil
}

// waitTopics polls metadata until every topic shows at least its configured
// partitions, each with a leader.
func waitTopics(ctx context.Context, c *kgo.Client, specs []TopicSpec) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	var missing []string
	for {
		md, err := c.Metadata(ctx, &kgo.MetadataRequest{Topics: names})
		if err == nil {
			ready := map[string]int{}
			for _, t := range md.Topics {
				if t.Error != nil {
					continue
				}
				led := 0
				for _, p := range t.Partitions {
					if p.Error == nil && p.Leader.Host != "" {
						led++
					}
				}
				ready[t.Name] = led
			}
			missing = missing[:0]
			for _, s := range specs {
				if ready[s.Name] < s.Partitions {
					missing = append(missing, s.Name)
				}
			}
			if len(missing) == 0 {
				missing = unservedTopics(ctx, c, specs)
				if len(missing) == 0 {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			sort.Strings(missing)
			return fmt.Errorf("kafka: topics not ready before the deadline (%s): %w", strings.Join(missing, ", "), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unservedTopics returns the topics with a partition whose leader does not
// yet answer for it. Apache Kafka (KRaft) publishes a new partition's leader
// in its metadata a moment before the leader's replica manager serves it,
// so a produce right after the metadata check can fail with Not Leader For
// Partition; a ListOffsets to every leader closes that window. (kfake
// serves a partition as soon as it is in the metadata.)
func unservedTopics(ctx context.Context, c *kgo.Client, specs []TopicSpec) []string {
	req := &kgo.ListOffsetsRequest{Topics: map[string][]kgo.OffsetRequest{}}
	for _, s := range specs {
		for p := 0; p < s.Partitions; p++ {
			req.Topics[s.Name] = append(req.Topics[s.Name], kgo.FirstOffsetOf(p))
		}
	}
	res, err := c.ListOffsets(ctx, req)
	var out []string
	for _, s := range specs {
		if err != nil {
			out = append(out, s.Name)
			continue
		}
		for _, p := range res.Topics[s.Name] {
			if p.Error != nil {
				out = append(out, s.Name)
				break
			}
		}
		if len(res.Topics[s.Name]) < s.Partitions {
			out = append(out, s.Name)
		}
	}
	return out
}
