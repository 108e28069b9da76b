package testenv

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tandem-analytics/tandem/internal/kfakegroups"
)

// Environment variables that point the tests at an external Kafka.
const (
	// EnvKafka selects the broker: unset or "kfake" for the in-process
	// broker, "apache" for an external one named by EnvKafkaBrokers.
	EnvKafka = "TANDEM_TEST_KAFKA"
	// EnvKafkaBrokers is a comma-separated host:port list.
	EnvKafkaBrokers = "TANDEM_TEST_KAFKA_BROKERS"
)

// KafkaCluster is a Kafka cluster for one test: by default an in-process
// kfake broker on a free loopback port, or the external broker named by
// TANDEM_TEST_KAFKA=apache and TANDEM_TEST_KAFKA_BROKERS.
//
// Topics are never auto-created: tandem creates its topics explicitly, and a
// test must too. Name topics and groups with UniqueName so that tests can
// share an external broker.
type KafkaCluster struct {
	// Brokers are the bootstrap addresses, "127.0.0.1:port".
	Brokers []string
	// External is true when the cluster is a real broker outside the test
	// process; Restart and Cluster are then unavailable.
	External bool

	t       testing.TB
	opts    KafkaOptions
	ports   []int
	dataDir string

	mu      sync.Mutex
	cluster *kfake.Cluster
	reaper  *kfakegroups.SessionReaper
}

// KafkaOptions configure the in-process broker. The zero value is what most
// tests want: one broker, persisted in a temp dir.
type KafkaOptions struct {
	// Brokers is the number of brokers (default 1, like a single-node
	// Apache Kafka in CI). kfake rejects replication factors above it.
	Brokers int
	// InMemory keeps no data dir: faster, but Restart loses all data.
	InMemory bool
	// Extra options are passed to kfake.NewCluster after ours (for example
	// kfake.SeedTopics or kfake.BrokerConfigs). Ignored for an external
	// broker.
	Extra []kfake.Opt
}

// Kafka returns a Kafka cluster for the test with default options. See
// KafkaWith.
func Kafka(t testing.TB) *KafkaCluster {
	t.Helper()
	return KafkaWith(t, KafkaOptions{})
}

// KafkaWith returns a Kafka cluster for the test: the external broker when
// TANDEM_TEST_KAFKA=apache, else a kfake cluster started with o, closed when
// the test ends. Starting kfake takes about a millisecond.
func KafkaWith(t testing.TB, o KafkaOptions) *KafkaCluster {
	t.Helper()
	switch mode := os.Getenv(EnvKafka); mode {
	case "", "kfake":
	case "apache":
		brokers := splitBrokers(os.Getenv(EnvKafkaBrokers))
		if len(brokers) == 0 {
			t.Fatalf("testenv: %s=apache needs %s=host:port[,host:port]; start the broker with its script first", EnvKafka, EnvKafkaBrokers)
		}
		return &KafkaCluster{Brokers: brokers, External: true, t: t, opts: o}
	default:
		t.Fatalf("testenv: %s=%q: want kfake (default) or apache", EnvKafka, mode)
	}

	if o.Brokers <= 0 {
		o.Brokers = 1
	}
	k := &KafkaCluster{t: t, opts: o}
	if !o.InMemory {
		k.dataDir = t.TempDir()
	}
	// Retry with new ports when one was taken between FreePort and listen.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		k.ports = k.ports[:0]
		for i := 0; i < o.Brokers; i++ {
			k.ports = append(k.ports, FreePort(t))
		}
		if err = k.open(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: starting kfake: %v", err)
	}
	t.Cleanup(k.close)
	return k
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func (k *KafkaCluster) open() error {
	opts := []kfake.Opt{kfake.Ports(k.ports...)}
	if k.dataDir != "" {
		opts = append(opts, kfake.DataDir(k.dataDir))
	}
	opts = append(opts, k.opts.Extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	k.Brokers = k.Brokers[:0]
	for _, p := range k.ports {
		k.Brokers = append(k.Brokers, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	}
	k.mu.Lock()
	k.cluster = c
	k.reaper = kfakegroups.StartSessionReaper(c, append([]string(nil), k.Brokers...))
	k.mu.Unlock()
	return nil
}

func (k *KafkaCluster) close() {
	k.mu.Lock()
	c, r := k.cluster, k.reaper
	k.cluster, k.reaper = nil, nil
	k.mu.Unlock()
	if r != nil {
		r.Close()
	}
	if c != nil {
		c.Close() // with a data dir this also saves the state to disk
	}
}

// Cluster returns the in-process kfake cluster, for fault injection with
// its Control functions. It fails the test against an external broker.
func (k *KafkaCluster) Cluster() *kfake.Cluster {
	k.t.Helper()
	if k.External {
		k.t.Fatalf("testenv: KafkaCluster.Cluster needs the in-process broker, not %s=apache", EnvKafka)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster
}

// Stop closes the broker (saving its state to the data dir), so clients see
// a broker outage until Start. Skips the test against an external broker,
// which the test cannot stop.
func (k *KafkaCluster) Stop() {
	k.t.Helper()
	k.skipIfExternal("Stop")
	k.close()
}

// Start reopens a stopped broker on the same ports and data dir.
func (k *KafkaCluster) Start() {
	k.t.Helper()
	k.skipIfExternal("Start")
	k.mu.Lock()
	running := k.cluster != nil
	k.mu.Unlock()
	if running {
		k.t.Fatalf("testenv: KafkaCluster.Start: the broker at %v is already running", k.Brokers)
	}
	// The old listener's port is normally free at once; allow a moment for
	// the kernel in case it is not.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := k.open()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("testenv: restarting kfake on %v: %v", k.Brokers, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Restart closes the broker and reopens it on the same ports and data dir,
// as a broker restart would: topics, records and committed group offsets
// survive (unless KafkaOptions.InMemory), connections do not.
func (k *KafkaCluster) Restart() {
	k.t.Helper()
	k.Stop()
	k.Start()
}

func (k *KafkaCluster) skipIfExternal(what string) {
	k.t.Helper()
	if k.External {
		k.t.Skipf("testenv: KafkaCluster.%s needs the in-process broker; %s=apache points at a broker this test cannot restart", what, EnvKafka)
	}
}

// String describes the cluster for log messages.
func (k *KafkaCluster) String() string {
	kind := "kfake"
	if k.External {
		kind = "external"
	}
	return fmt.Sprintf("%s %s", kind, strings.Join(k.Brokers, ","))
}
