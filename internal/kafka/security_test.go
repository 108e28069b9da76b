package kafka_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tandem-analytics/tandem/internal/kafka"
	"github.com/tandem-analytics/tandem/internal/testenv"
	"github.com/tandem-analytics/tandem/schemas"
)

// TestSASLSSL writes through the gateway's path (Producer.Append) and reads
// through the speed layer's (consumer group, Claim.FetchLazy) and the
// archiver's (Claim.BatchFetcher, which dials and authenticates its own
// connection) over a SASL_SSL listener, with every mechanism tandem
// speaks, the security built from tandem.yaml's keys. On the in-process
// broker in `make test`; on Apache Kafka 4.x in the Apache Kafka tier.
func TestSASLSSL(t *testing.T) {
	k := testenv.SecureKafka(t)
	for _, mech := range []string{schemas.SASLPlain, schemas.SASLScramSHA256, schemas.SASLScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			sec, err := kafka.NewSecurity(schemas.KafkaConfig{
				TLS:  schemas.ClientTLS{CAFile: k.CAFile},
				SASL: schemas.KafkaSASL{Mechanism: mech, Username: k.Username, Password: k.Password},
			})
			require.NoError(t, err)
			require.Equal(t, "SASL_SSL/"+mech, sec.String())
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			topic := testenv.UniqueName(t, "sec")
			const partitions, perPartition = 2, 50
			require.NoError(t, kafka.EnsureTopicSpecs(ctx, k.Brokers, sec, []kafka.TopicSpec{{Name: topic, Partitions: partitions, ReplicationFactor: 1}}))

			p, err := kafka.NewProducer(k.Brokers, kafka.ProducerOptions{Security: sec})
			require.NoError(t, err)
			defer p.Close()
			require.NoError(t, p.Ready())
			want := map[string]bool{}
			var keys, values [][]byte
			for i := 0; i < partitions*perPartition; i++ {
				v := fmt.Sprintf("event-%03d", i)
				keys, values = append(keys, []byte(fmt.Sprintf("key-%d", i))), append(values, []byte(v))
				want[v] = true
			}
			require.NoError(t, p.Append(ctx, topic, time.Now(), map[string]string{kafka.HeaderStream: "s"}, keys, values))

			for _, path := range []string{"speed", "archive"} {
				got := readAll(t, ctx, k.Brokers, sec, topic, path, len(want))
				require.Len(t, got, len(want), "%s path", path)
				for _, v := range got {
					require.True(t, want[v], "%s path read %q, which was never written", path, v)
				}
			}
		})
	}
}

// readAll joins a fresh group over the topic and reads n records with the
// claim's BatchFetcher (what the speed layer and the archiver read with),
// returning their values (sorted; each at most once, or the test fails).
func readAll(t *testing.T, ctx context.Context, brokers []string, sec kafka.Security, topic, path string, n int) []string {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	add := func(v string) {
		mu.Lock()
		defer mu.Unlock()
		require.False(t, seen[v], "%s path read %q twice", path, v)
		seen[v] = true
		if len(seen) == n {
			close(done)
		}
	}
	gctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- kafka.RunGroup(gctx, kafka.GroupConfig{
			Brokers: brokers, GroupID: testenv.UniqueName(t, path), Topics: []string{topic}, Security: sec,
			SessionTimeout: 6 * time.Second,
			StartOffset:    func(context.Context, string, int32) (int64, error) { return kafka.FirstOffset, nil },
		}, func(hctx context.Context, c *kafka.Claim) error {
			f := c.BatchFetcher()
			defer f.Close()
			var recs []kafka.Record
			for {
				var err error
				if recs, err = f.Fetch(hctx, recs[:0]); err != nil {
					if !kafka.IsEnded(hctx, err) {
						return err
					}
					return nil
				}
				for _, r := range recs {
					add(string(r.Value))
				}
			}
		})
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatalf("%s path: %d of %d records before the deadline", path, len(seen), n)
	}
	stop()
	require.NoError(t, <-errc)
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// TestSecurityRefused: the wrong password, a CA that did not sign the
// broker's certificate, and plaintext against the TLS listener all fail,
// each with an error that says so, rather than hanging or passing.
func TestSecurityRefused(t *testing.T) {
	k := testenv.SecureKafka(t)
	other := testenv.NewCerts(t) // a CA of its own, not the broker's
	cases := []struct {
		name    string
		cfg     schemas.KafkaConfig
		wantErr string
	}{
		{"wrong password", schemas.KafkaConfig{TLS: schemas.ClientTLS{CAFile: k.CAFile},
			SASL: schemas.KafkaSASL{Mechanism: schemas.SASLScramSHA512, Username: k.Username, Password: "wrong"}}, "over SASL_SSL/SCRAM-SHA-512"},
		{"unknown CA", schemas.KafkaConfig{TLS: schemas.ClientTLS{CAFile: other.CAFile},
			SASL: schemas.KafkaSASL{Mechanism: schemas.SASLScramSHA512, Username: k.Username, Password: k.Password}}, "certificate"},
		{"no TLS", schemas.KafkaConfig{
			SASL: schemas.KafkaSASL{Mechanism: schemas.SASLScramSHA512, Username: k.Username, Password: k.Password}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sec, err := kafka.NewSecurity(tc.cfg)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = kafka.EnsureTopicSpecs(ctx, k.Brokers, sec, []kafka.TopicSpec{{Name: testenv.UniqueName(t, "x"), Partitions: 1, ReplicationFactor: 1}})
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

// TestNewSecurityErrors: a missing file names the key that points at it.
func TestNewSecurityErrors(t *testing.T) {
	_, err := kafka.NewSecurity(schemas.KafkaConfig{TLS: schemas.ClientTLS{CAFile: "/nonexistent/ca.pem"}})
	require.ErrorContains(t, err, "kafka.tls.ca_file")
	_, err = kafka.NewSecurity(schemas.KafkaConfig{SASL: schemas.KafkaSASL{Mechanism: schemas.SASLPlain, Username: "u", PasswordFile: "/nonexistent/pw"}})
	require.ErrorContains(t, err, "kafka.sasl.password_file")
	sec, err := kafka.NewSecurity(schemas.KafkaConfig{})
	require.NoError(t, err)
	require.Equal(t, "PLAINTEXT", sec.String())
}

// TestMutualTLS: a broker that asks for a client certificate takes
// tandem's (kafka.tls.cert_file/key_file) on every path, including the
// BatchFetcher's own connection, and refuses a client without one.
func TestMutualTLS(t *testing.T) {
	certs := testenv.NewCerts(t)
	server := certs.Server.Clone()
	server.ClientAuth, server.ClientCAs = tls.RequireAndVerifyClientCert, certs.Pool
	k := testenv.KafkaWith(t, testenv.KafkaOptions{InMemory: true, Extra: []kfake.Opt{kfake.TLS(server)}})
	if k.External {
		t.Skip("the Apache Kafka tier's listener does not ask for client certificates")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topic := testenv.UniqueName(t, "mtls")
	spec := []kafka.TopicSpec{{Name: topic, Partitions: 1, ReplicationFactor: 1}}

	anon, err := kafka.NewSecurity(schemas.KafkaConfig{TLS: schemas.ClientTLS{CAFile: certs.CAFile}})
	require.NoError(t, err)
	require.Error(t, kafka.EnsureTopicSpecs(ctx, k.Brokers, anon, spec), "no client certificate")

	sec, err := kafka.NewSecurity(schemas.KafkaConfig{TLS: schemas.ClientTLS{CAFile: certs.CAFile,
		CertFile: certs.ClientCertFile, KeyFile: certs.ClientKeyFile}})
	require.NoError(t, err)
	require.Equal(t, "SSL", sec.String())
	require.NoError(t, kafka.EnsureTopicSpecs(ctx, k.Brokers, sec, spec))
	p, err := kafka.NewProducer(k.Brokers, kafka.ProducerOptions{Security: sec})
	require.NoError(t, err)
	defer p.Close()
	require.NoError(t, p.Append(ctx, topic, time.Now(), nil, [][]byte{[]byte("k")}, [][]byte{[]byte("v")}))
	f := kafka.NewBatchFetcher(kafka.BatchFetcherConfig{Brokers: k.Brokers, Topic: topic, Start: kafka.FirstOffset, Security: sec})
	defer f.Close()
	recs, err := f.Fetch(ctx, nil)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, "v", string(recs[0].Value))
}
