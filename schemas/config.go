package schemas

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultConfigPath is where commands look for the configuration when no
// --config is given.
const DefaultConfigPath = "tandem.yaml"

// Config is the whole of tandem.yaml. Every component reads the same file and
// uses the sections it needs.
type Config struct {
	Kafka      KafkaConfig      `yaml:"kafka"`
	ClickHouse ClickHouseConfig `yaml:"clickhouse"`
	S3         S3Config         `yaml:"s3"`
	Ingest     IngestConfig     `yaml:"ingest"`
	Serve      ServeConfig      `yaml:"serve"`
	Speed      SpeedConfig      `yaml:"speed"`
	Archive    ArchiveConfig    `yaml:"archive"`
	Batch      BatchConfig      `yaml:"batch"`
	Status     StatusConfig     `yaml:"status"`
	// ChunkSize is C of the exactness contract: chunk k of a partition holds
	// offsets [k*C, (k+1)*C). Changing it on a running deployment changes
	// what every stored chunk number means, so it is fixed per deployment.
	ChunkSize int64      `yaml:"chunk_size"`
	Auth      AuthConfig `yaml:"auth"`
	Streams   []*Stream  `yaml:"streams"`
	Views     []*View    `yaml:"views"`

	// Path is the file the configuration was read from, if any.
	Path string `yaml:"-"`
}

// KafkaConfig says how to reach the Kafka cluster.
type KafkaConfig struct {
	Brokers []string `yaml:"brokers"`
	// ReplicationFactor is used when tandem creates a topic that does not exist.
	ReplicationFactor int `yaml:"replication_factor"`
	// GroupPrefix prefixes the consumer-group names of speed and archive.
	GroupPrefix string `yaml:"group_prefix"`
	// TLS encrypts every connection to the brokers (SSL or SASL_SSL
	// listeners); SASL authenticates them (SASL_PLAINTEXT or SASL_SSL).
	TLS  ClientTLS `yaml:"tls"`
	SASL KafkaSASL `yaml:"sasl"`
}

// ClickHouseConfig says how to reach ClickHouse over the native protocol.
type ClickHouseConfig struct {
	Addr     string `yaml:"addr"`
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// AnalystUser is the read-only user analysts connect as; tandem grants
	// nothing to it, the server's users file declares it.
	AnalystUser string `yaml:"analyst_user"`
	// TLS connects to the server's secure native port (tcp_port_secure,
	// 9440 by convention): addr must name that port.
	TLS ClientTLS `yaml:"tls"`
	// Cluster, when set, names a cluster of the servers' remote_servers:
	// tandem shards its tables over it (local tables under Distributed
	// ones) and runs its DDL on every server of it. Empty: one server.
	Cluster string `yaml:"cluster"`
	// Replicated makes every table of the cluster a Replicated one (the
	// servers need ZooKeeper and the {shard} and {replica} macros); the
	// shards may then have several replicas. Needs Cluster.
	Replicated bool `yaml:"replicated"`
}

// S3Config says where the master dataset, batch views and lake live.
type S3Config struct {
	Endpoint  string `yaml:"endpoint"`
	Bucket    string `yaml:"bucket"`
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	Secure    bool   `yaml:"secure"`
	Region    string `yaml:"region"`
	// TLS checks the endpoint's certificate against a CA of your own
	// (ca_file) or with the other ClientTLS settings; it implies secure.
	TLS ClientTLS `yaml:"tls"`
}

// TLSConfig turns on HTTPS for a server when both files are set.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Enabled reports whether both files are set.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// IngestConfig configures the HTTP gateway.
type IngestConfig struct {
	Listen        string   `yaml:"listen"`
	MaxBodyBytes  int64    `yaml:"max_body_bytes"`
	MaxFutureSkew Duration `yaml:"max_future_skew"`
	// MaxInflightBytes bounds the request bodies held at once; beyond it the
	// gateway answers 429 at once instead of queueing.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes"`
	// ProduceTimeout is how long a request waits for Kafka before 503.
	ProduceTimeout Duration  `yaml:"produce_timeout"`
	TLS            TLSConfig `yaml:"tls"`
	// MaxInflightBytesPerClient bounds the in-flight bytes of one client (its
	// token, or its address when it sends none), so one client cannot take
	// the whole max_inflight_bytes. 0: a quarter of max_inflight_bytes, and
	// at least max_body_bytes.
	MaxInflightBytesPerClient int64 `yaml:"max_inflight_bytes_per_client"`
	// MaxEventsPerRequest refuses (413) a request with more events, before
	// any of them is decoded.
	MaxEventsPerRequest int `yaml:"max_events_per_request"`
	// The listener's deadlines: read_header_timeout, read_timeout (the
	// whole request, body included), write_timeout, idle_timeout.
	HTTPTimeouts `yaml:",inline"`
}

// HTTPTimeouts are a listener's deadlines, with net/http's meanings.
type HTTPTimeouts struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included: a client
	// sending slower is cut off, and the bytes it held are released.
	ReadTimeout Duration `yaml:"read_timeout"`
	// WriteTimeout bounds everything after the headers: reading the body,
	// the work and writing the answer. A client that never reads its answer
	// holds the request at most this long.
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout bounds a kept-alive connection between requests.
	IdleTimeout Duration `yaml:"idle_timeout"`
}

// IsPlaceholderSecret reports whether a secret is one of the example values
// shipped in deploy/compose/.env.example, which all start with "change-me".
func IsPlaceholderSecret(v string) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "change-me")
}

// InflightPerClient is max_inflight_bytes_per_client with its default applied.
func (c IngestConfig) InflightPerClient() int64 {
	if c.MaxInflightBytesPerClient > 0 {
		return c.MaxInflightBytesPerClient
	}
	return max(c.MaxInflightBytes/4, c.MaxBodyBytes)
}

// MergeGroups is the bound on the groups a query with a limit merges:
// max_merge_groups, and never less than max_result_rows (what a query
// without a limit may merge).
func (c ServeConfig) MergeGroups() int { return max(c.MaxMergeGroups, c.MaxResultRows) }

// ServeConfig configures the query API and dashboard.
type ServeConfig struct {
	Listen string `yaml:"listen"`
	// MaxQueryRange refuses queries whose [from, to) is longer.
	MaxQueryRange Duration `yaml:"max_query_range"`
	// ManifestPoll is how often serving looks for a newly published run.
	ManifestPoll Duration `yaml:"manifest_poll"`
	CacheBytes   int64    `yaml:"cache_bytes"`
	// MaxResultRows refuses (400) a query whose answer would hold more
	// rows (buckets × groups); an answer is never cut short instead.
	MaxResultRows int `yaml:"max_result_rows"`
	// MaxMergeGroups refuses (400) a query with a limit whose merge would
	// hold more groups before the limit cuts them: top-N over a dimension
	// with many values merges every value, but answers only N per bucket.
	MaxMergeGroups int `yaml:"max_merge_groups"`
	// MaxConcurrentQueries is how many queries one replica answers at
	// once; more get 503 with Retry-After at once, never a queue. 0 (the
	// default) means 2 × GOMAXPROCS at start-up.
	MaxConcurrentQueries int `yaml:"max_concurrent_queries"`
	// WarmCache loads the newest row groups of a run into the cache (up to
	// half of it) at start-up and before switching to a new run, so the
	// first queries after a batch run are not cold.
	WarmCache bool      `yaml:"warm_cache"`
	TLS       TLSConfig `yaml:"tls"`
	// The listener's deadlines: read_header_timeout, read_timeout,
	// write_timeout (bounds a query's answer), idle_timeout.
	HTTPTimeouts `yaml:",inline"`
}

// SpeedConfig configures the speed layer.
type SpeedConfig struct {
	// Listen serves /healthz, /readyz and /metrics.
	Listen        string   `yaml:"listen"`
	FlushInterval Duration `yaml:"flush_interval"`
	// FlushRows flushes early when this many rows changed since the last flush.
	FlushRows int `yaml:"flush_rows"`
	// SessionTimeout is how long a dead speed member keeps its partitions
	// before the group gives them to another (0: 10s; brokers refuse less
	// than their group.min.session.timeout.ms, 6s by default).
	SessionTimeout Duration `yaml:"session_timeout"`
}

// ArchiveConfig configures the archiver that writes the master dataset.
type ArchiveConfig struct {
	// Listen serves /healthz, /readyz and /metrics.
	Listen       string   `yaml:"listen"`
	MaxFileBytes int64    `yaml:"max_file_bytes"`
	MaxFileAge   Duration `yaml:"max_file_age"`
}

// BatchConfig configures batch runs.
type BatchConfig struct {
	// Every is the interval of `tandem dev`'s built-in scheduler; 0 turns it off.
	Every Duration `yaml:"every"`
	// KeepRuns is how many published runs per view are kept in S3.
	KeepRuns int `yaml:"keep_runs"`
	// LockTTL is how long a crashed run's lock blocks the next run.
	LockTTL Duration `yaml:"lock_ttl"`
	// ExportAfterRun writes the data-lake export after each successful run.
	ExportAfterRun bool `yaml:"export_after_run"`
	// SpeedReleaseWait bounds how long a run waits, after publishing, for
	// the serving replicas to switch to it before deleting the speed rows
	// it absorbed; replicas still on the older run keep theirs until a
	// later run. 0 deletes what the leases allow at once.
	SpeedReleaseWait Duration `yaml:"speed_release_wait"`
	// RemovedViewGrace is how long the objects of a view no longer in the
	// configuration (views/<view>/ in S3) stay after their newest write
	// before a batch run deletes them; 0 keeps them forever.
	RemovedViewGrace Duration `yaml:"removed_view_grace"`
}

// StatusConfig holds the thresholds of the health report. A value at or over
// Yellow is yellow, at or over Red is red.
type StatusConfig struct {
	Thresholds map[string]Threshold `yaml:"thresholds"`
	// Addrs says where the health report scrapes a component (ingest, speed,
	// archive, serve) when that is not its listen address as seen from
	// here — another pod or container, e.g. {speed: "tandem-speed:8082"}.
	Addrs map[string]string `yaml:"addrs"`
}

// Threshold is one yellow/red pair of the health report.
type Threshold struct {
	Yellow float64 `yaml:"yellow"`
	Red    float64 `yaml:"red"`
}

// AuthConfig lists bearer tokens. An empty list leaves that surface open.
type AuthConfig struct {
	IngestTokens []string `yaml:"ingest_tokens"`
	QueryTokens  []string `yaml:"query_tokens"`
	// MetricsTokens, when set, are required on every component's /metrics
	// (the Prometheus scrape and the health report send one of them).
	MetricsTokens []string `yaml:"metrics_tokens"`
}

// Default returns the configuration used for every setting the file leaves out.
func Default() Config {
	return Config{
		Kafka:      KafkaConfig{Brokers: []string{"127.0.0.1:9092"}, ReplicationFactor: 1, GroupPrefix: "tandem"},
		ClickHouse: ClickHouseConfig{Addr: "127.0.0.1:9000", Database: "tandem", Username: "default", AnalystUser: "analyst"},
		S3:         S3Config{Endpoint: "127.0.0.1:9100", Bucket: "tandem", Region: "us-east-1"},
		Ingest: IngestConfig{Listen: "127.0.0.1:8080", MaxBodyBytes: 8 << 20, MaxFutureSkew: Duration(time.Hour),
			MaxInflightBytes: 256 << 20, ProduceTimeout: Duration(10 * time.Second), MaxEventsPerRequest: 10000,
			HTTPTimeouts: HTTPTimeouts{ReadHeaderTimeout: Duration(10 * time.Second), ReadTimeout: Duration(30 * time.Second),
				WriteTimeout: Duration(time.Minute), IdleTimeout: Duration(2 * time.Minute)}},
		Serve: ServeConfig{Listen: "127.0.0.1:8081", MaxQueryRange: Duration(400 * 24 * time.Hour),
			ManifestPoll: Duration(2 * time.Second), CacheBytes: 256 << 20, WarmCache: true,
			MaxResultRows: 100000, MaxMergeGroups: 1000000,
			HTTPTimeouts: HTTPTimeouts{ReadHeaderTimeout: Duration(10 * time.Second), ReadTimeout: Duration(10 * time.Second),
				WriteTimeout: Duration(time.Minute), IdleTimeout: Duration(2 * time.Minute)}},
		Speed:   SpeedConfig{Listen: "127.0.0.1:8082", FlushInterval: Duration(time.Second), FlushRows: 50000},
		Archive: ArchiveConfig{Listen: "127.0.0.1:8083", MaxFileBytes: 128 << 20, MaxFileAge: Duration(5 * time.Minute)},
		Batch: BatchConfig{Every: Duration(10 * time.Minute), KeepRuns: 3, LockTTL: Duration(time.Hour), SpeedReleaseWait: Duration(time.Minute),
			RemovedViewGrace: Duration(7 * 24 * time.Hour)},
		ChunkSize: 10000,
	}
}

// Stream returns the named stream, or nil.
func (c *Config) Stream(name string) *Stream {
	for _, s := range c.Streams {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// View returns the named view, or nil.
func (c *Config) View(name string) *View {
	for _, v := range c.Views {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// ViewsOf returns the views defined on the named stream.
func (c *Config) ViewsOf(stream string) []*View {
	var out []*View
	for _, v := range c.Views {
		if v.Stream == stream {
			out = append(out, v)
		}
	}
	return out
}

// LoadFile reads, expands and validates a configuration file.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data, os.LookupEnv)
}

// ConfigError is one problem found in a configuration file.
type ConfigError struct {
	File string
	Line int // 0 when the problem has no single place
	Msg  string
}

func (e ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// ConfigErrors is every problem found in a file, in line order.
type ConfigErrors []ConfigError

func (es ConfigErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// ExpandEnv replaces ${NAME} with the variable's value and ${NAME:-default}
// with the default when NAME is unset or empty. Expansion happens on the text,
// before parsing, so line numbers stay those of the file.
func ExpandEnv(data []byte, lookup func(string) (string, bool)) []byte {
	return envRef.ReplaceAllFunc(data, func(m []byte) []byte {
		sub := envRef.FindSubmatch(m)
		if v, ok := lookup(string(sub[1])); ok && v != "" {
			return []byte(v)
		}
		return sub[3]
	})
}

// Parse expands environment references in data, decodes it over Default()
// and validates the result. name is used in error messages.
func Parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	if len(data) > 16<<20 {
		return nil, ConfigErrors{{File: name, Msg: "file is larger than 16 MiB"}}
	}
	data = ExpandEnv(data, lookup)
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, ConfigErrors{yamlError(name, err)}
	}
	cfg := Default()
	cfg.Path = name
	if len(root.Content) == 0 {
		return nil, ConfigErrors{{File: name, Msg: "file is empty"}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			var es ConfigErrors
			for _, msg := range te.Errors {
				es = append(es, yamlError(name, errors.New(msg)))
			}
			return nil, es
		}
		return nil, ConfigErrors{yamlError(name, err)}
	}
	if errs := cfg.validate(&locator{file: name, root: root.Content[0]}); len(errs) > 0 {
		return nil, errs
	}
	return &cfg, nil
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var notFound = regexp.MustCompile(`field (\S+) not found in type \S+`)

// yamlError rewrites yaml.v3's messages as "file:line: plain sentence".
func yamlError(file string, err error) ConfigError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		fmt.Sscanf(m[1], "%d", &line)
		msg = m[2]
	}
	if m := notFound.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("field %q not recognised", m[1])
	}
	msg = strings.ReplaceAll(msg, "cannot unmarshal !!str", "cannot read text")
	return ConfigError{File: file, Line: line, Msg: msg}
}

// UnmarshalYAML reads "90s", "5m", "1h", "1d" or 0.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	if s == "0" {
		*d = 0
		return nil
	}
	if strings.HasSuffix(s, "d") {
		g, err := ParseGranularity(s)
		if err != nil {
			return fmt.Errorf("line %d: %q is not a duration", n.Line, s)
		}
		*d = Duration(g)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (use 90s, 5m, 1h or 1d)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration the way UnmarshalYAML reads it.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalYAML reads one of the view granularities.
func (g *Granularity) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseGranularity(strings.TrimSpace(n.Value))
	if err != nil || !v.IsViewGranularity() {
		return fmt.Errorf("line %d: granularity %q is not one of 1m, 5m, 15m, 1h, 6h, 1d", n.Line, n.Value)
	}
	*g = v
	return nil
}

// MarshalYAML writes the granularity the way UnmarshalYAML reads it.
func (g Granularity) MarshalYAML() (any, error) { return g.String(), nil }

// locator finds the line of a value in the parsed document, so semantic
// errors point at the place to fix.
type locator struct {
	file string
	root *yaml.Node
}

// line follows keys (string) and sequence indexes (int) from the root and
// returns the line of the deepest node found.
func (l *locator) line(path ...any) int {
	n := l.root
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						line = n.Content[i].Line
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
				line = next.Line
			}
		}
		if next == nil {
			return line
		}
		n = next
	}
	return line
}

func (l *locator) errorf(path []any, format string, args ...any) ConfigError {
	return ConfigError{File: l.file, Line: l.line(path...), Msg: fmt.Sprintf(format, args...)}
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// clusterPattern is what clickhouse.cluster allows: a remote_servers
// element name, which tandem quotes into Distributed(...) engines.
var clusterPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,62}$`)

var topicPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// validate checks everything the types cannot: references between sections,
// field types that measures need, and the chunk contract. It also builds the
// lookup indexes streams and views use.
func (c *Config) validate(l *locator) ConfigErrors {
	var errs ConfigErrors
	add := func(path []any, format string, args ...any) {
		errs = append(errs, l.errorf(path, format, args...))
	}
	if c.ChunkSize <= 0 {
		add([]any{"chunk_size"}, "chunk_size must be positive (it is the number of Kafka offsets in one chunk); got %d", c.ChunkSize)
	}
	if len(c.Kafka.Brokers) == 0 {
		add([]any{"kafka", "brokers"}, "kafka.brokers must name at least one broker")
	}
	for _, t := range []struct {
		key string
		tls ClientTLS
	}{{"kafka", c.Kafka.TLS}, {"clickhouse", c.ClickHouse.TLS}, {"s3", c.S3.TLS}} {
		if err := t.tls.check(t.key + ".tls"); err != nil {
			add([]any{t.key, "tls"}, "%v", err)
		}
	}
	if c.S3.TLS.On() && strings.HasPrefix(c.S3.Endpoint, "http://") {
		add([]any{"s3", "endpoint"}, "s3.endpoint %q says http:// but s3.tls is set; drop the scheme or write https://", c.S3.Endpoint)
	}
	if sa := c.Kafka.SASL; sa.On() {
		switch sa.Mechanism {
		case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		default:
			add([]any{"kafka", "sasl", "mechanism"}, "kafka.sasl.mechanism %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", sa.Mechanism)
		}
		if sa.Username == "" {
			add([]any{"kafka", "sasl"}, "kafka.sasl.username must be set when kafka.sasl.mechanism is")
		}
		if (sa.Password == "") == (sa.PasswordFile == "") {
			add([]any{"kafka", "sasl"}, "kafka.sasl: set exactly one of password (may be ${ENV_VAR}) and password_file")
		}
		if sa.Mechanism == SASLPlain && !c.Kafka.TLS.On() {
			// PLAIN sends the password as it is: over plaintext anyone on
			// the path reads it.
			add([]any{"kafka", "sasl", "mechanism"}, "kafka.sasl.mechanism PLAIN sends the password in clear text; turn on kafka.tls (SASL_SSL) or use SCRAM-SHA-512")
		}
	} else if c.Kafka.SASL != (KafkaSASL{}) {
		add([]any{"kafka", "sasl"}, "kafka.sasl: mechanism must be set (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512) when username or password is")
	}
	if !namePattern.MatchString(c.ClickHouse.Database) {
		add([]any{"clickhouse", "database"}, "clickhouse.database %q must be lower-case letters, digits and _", c.ClickHouse.Database)
	}
	if c.ClickHouse.Cluster != "" && !clusterPattern.MatchString(c.ClickHouse.Cluster) {
		add([]any{"clickhouse", "cluster"}, "clickhouse.cluster %q must name a cluster of the servers' remote_servers: letters, digits and _, starting with a letter", c.ClickHouse.Cluster)
	}
	if c.ClickHouse.Replicated && c.ClickHouse.Cluster == "" {
		add([]any{"clickhouse", "replicated"}, "clickhouse.replicated needs clickhouse.cluster: replicas are the servers of a cluster's shards")
	}
	if c.S3.Bucket == "" {
		add([]any{"s3", "bucket"}, "s3.bucket must be set")
	}
	if c.Ingest.MaxBodyBytes <= 0 {
		add([]any{"ingest", "max_body_bytes"}, "ingest.max_body_bytes must be positive")
	}
	if c.Ingest.MaxInflightBytes < c.Ingest.MaxBodyBytes {
		add([]any{"ingest", "max_inflight_bytes"}, "ingest.max_inflight_bytes (%d) must be at least max_body_bytes (%d), or no request of the largest size could ever be taken", c.Ingest.MaxInflightBytes, c.Ingest.MaxBodyBytes)
	}
	if c.Ingest.MaxInflightBytesPerClient != 0 && (c.Ingest.MaxInflightBytesPerClient < c.Ingest.MaxBodyBytes || c.Ingest.MaxInflightBytesPerClient > c.Ingest.MaxInflightBytes) {
		add([]any{"ingest", "max_inflight_bytes_per_client"}, "ingest.max_inflight_bytes_per_client (%d) must be between max_body_bytes (%d) and max_inflight_bytes (%d), or 0 for a quarter of max_inflight_bytes", c.Ingest.MaxInflightBytesPerClient, c.Ingest.MaxBodyBytes, c.Ingest.MaxInflightBytes)
	}
	if c.Ingest.MaxEventsPerRequest <= 0 {
		add([]any{"ingest", "max_events_per_request"}, "ingest.max_events_per_request must be positive; got %d", c.Ingest.MaxEventsPerRequest)
	}
	for _, sec := range []struct {
		name string
		t    HTTPTimeouts
	}{{"ingest", c.Ingest.HTTPTimeouts}, {"serve", c.Serve.HTTPTimeouts}} {
		for _, f := range []struct {
			key string
			d   Duration
		}{{"read_header_timeout", sec.t.ReadHeaderTimeout}, {"read_timeout", sec.t.ReadTimeout}, {"write_timeout", sec.t.WriteTimeout}, {"idle_timeout", sec.t.IdleTimeout}} {
			if f.d <= 0 {
				add([]any{sec.name, f.key}, "%s.%s must be positive (a listener without it lets one slow client hold a connection forever)", sec.name, f.key)
			}
		}
	}
	if t := c.Ingest.HTTPTimeouts; t.ReadHeaderTimeout > t.ReadTimeout {
		add([]any{"ingest", "read_header_timeout"}, "ingest.read_header_timeout (%s) must not be longer than ingest.read_timeout (%s), which includes the headers", t.ReadHeaderTimeout.D(), t.ReadTimeout.D())
	}
	if t := c.Ingest.HTTPTimeouts; t.WriteTimeout < t.ReadTimeout+c.Ingest.ProduceTimeout {
		add([]any{"ingest", "write_timeout"}, "ingest.write_timeout (%s) must be at least ingest.read_timeout + ingest.produce_timeout (%s): it runs from the end of the headers through reading the body and waiting for Kafka", t.WriteTimeout.D(), (t.ReadTimeout + c.Ingest.ProduceTimeout).D())
	}
	if t := c.Serve.HTTPTimeouts; t.ReadHeaderTimeout > t.ReadTimeout {
		add([]any{"serve", "read_header_timeout"}, "serve.read_header_timeout (%s) must not be longer than serve.read_timeout (%s), which includes the headers", t.ReadHeaderTimeout.D(), t.ReadTimeout.D())
	}
	for i, t := range c.Auth.MetricsTokens {
		if t == "" {
			add([]any{"auth", "metrics_tokens", i}, "auth.metrics_tokens[%d] is empty", i)
		}
	}
	// The example secrets shipped with deploy/compose work as they are, so
	// `cp .env.example .env` would run with passwords anyone can read.
	secrets := []struct {
		path  []any
		key   string
		value string
	}{
		{[]any{"clickhouse", "password"}, "clickhouse.password", c.ClickHouse.Password},
		{[]any{"s3", "access_key"}, "s3.access_key", c.S3.AccessKey},
		{[]any{"s3", "secret_key"}, "s3.secret_key", c.S3.SecretKey},
	}
	for _, list := range []struct {
		key    string
		tokens []string
	}{{"ingest_tokens", c.Auth.IngestTokens}, {"query_tokens", c.Auth.QueryTokens}, {"metrics_tokens", c.Auth.MetricsTokens}} {
		for i, t := range list.tokens {
			secrets = append(secrets, struct {
				path  []any
				key   string
				value string
			}{[]any{"auth", list.key, i}, fmt.Sprintf("auth.%s[%d]", list.key, i), t})
		}
	}
	for _, sc := range secrets {
		if IsPlaceholderSecret(sc.value) {
			add(sc.path, "%s is still the example value %q (from deploy/compose/.env.example); set a secret of your own before starting", sc.key, sc.value)
		}
	}
	if c.Archive.MaxFileBytes <= 0 || c.Archive.MaxFileAge <= 0 {
		add([]any{"archive"}, "archive.max_file_bytes and archive.max_file_age must be positive")
	}
	if c.Speed.FlushInterval <= 0 {
		add([]any{"speed", "flush_interval"}, "speed.flush_interval must be positive")
	}
	if c.Serve.MaxResultRows <= 0 {
		add([]any{"serve", "max_result_rows"}, "serve.max_result_rows must be positive (the most rows one answer may hold); got %d", c.Serve.MaxResultRows)
	}
	if c.Serve.MaxMergeGroups <= 0 {
		add([]any{"serve", "max_merge_groups"}, "serve.max_merge_groups must be positive (the most groups a query with a limit merges before the limit cuts them); got %d", c.Serve.MaxMergeGroups)
	}
	if c.Serve.MaxConcurrentQueries < 0 {
		add([]any{"serve", "max_concurrent_queries"}, "serve.max_concurrent_queries must be 0 (2 × GOMAXPROCS) or positive; got %d", c.Serve.MaxConcurrentQueries)
	}
	if c.Batch.KeepRuns < 2 {
		// Speed rows of chunks absorbed by an older run are deleted; serving
		// replicas still on the previous run need that run's files.
		add([]any{"batch", "keep_runs"}, "batch.keep_runs must be at least 2, so serving replicas still on the previous run can finish their queries")
	}
	if c.Batch.SpeedReleaseWait < 0 {
		add([]any{"batch", "speed_release_wait"}, "batch.speed_release_wait must not be negative (0 deletes what the serving leases allow at once); got %s", c.Batch.SpeedReleaseWait)
	}
	for name := range c.Status.Addrs {
		switch name {
		case "ingest", "speed", "archive", "serve":
		default:
			add([]any{"status", "addrs", name}, "status.addrs: %q is not a component (use ingest, speed, archive or serve)", name)
		}
	}
	for name, th := range c.Status.Thresholds {
		if th.Red < th.Yellow {
			add([]any{"status", "thresholds", name}, "status.thresholds.%s: red (%g) must not be below yellow (%g)", name, th.Red, th.Yellow)
		}
	}

	streams := map[string]*Stream{}
	for i, s := range c.Streams {
		at := func(rest ...any) []any { return append([]any{"streams", i}, rest...) }
		if s == nil {
			add(at(), "stream %d is empty", i)
			continue
		}
		if !namePattern.MatchString(s.Name) {
			add(at("name"), "stream name %q must be lower-case letters, digits and _, starting with a letter", s.Name)
		}
		if streams[s.Name] != nil {
			add(at("name"), "stream %q is defined twice", s.Name)
		}
		streams[s.Name] = s
		if s.Topic == "" {
			s.Topic = "tandem." + s.Name
		}
		if !topicPattern.MatchString(s.Topic) {
			add(at("topic"), "stream %q: topic %q is not a valid Kafka topic name", s.Name, s.Topic)
		}
		if s.Partitions <= 0 || s.Partitions > 10000 {
			add(at("partitions"), "stream %q: partitions must be between 1 and 10000; got %d", s.Name, s.Partitions)
		}
		if w := s.DedupWindow.D(); w != 0 && (w < time.Second || w%time.Millisecond != 0) {
			add(at("dedup_window"), "stream %q: dedup_window must be a whole number of milliseconds, at least 1s, or unset (an id is then a duplicate forever); got %s", s.Name, w)
		}
		if r := s.Retention.D(); r != 0 {
			switch {
			case r < Day:
				add(at("retention"), "stream %q: streams[].retention must be at least 1d, or unset to keep the master dataset forever; got %s", s.Name, r)
			case c.Ingest.MaxFutureSkew <= 0:
				// Without the skew limit an event's time is unbounded by its
				// Kafka time, so no Kafka-time cutoff keeps a view day whole.
				add(at("retention"), "stream %q: streams[].retention needs ingest.max_future_skew (the bound of event time over Kafka time that keeps retained days whole); it is 0", s.Name)
			}
		}
		if s.RawEvents && s.RawRetention == 0 {
			s.RawRetention = Duration(7 * 24 * time.Hour)
		}
		seen := map[string]bool{}
		for j, f := range s.Fields {
			if !namePattern.MatchString(f.Name) {
				add(at("fields", j, "name"), "stream %q: field name %q must be lower-case letters, digits and _, starting with a letter", s.Name, f.Name)
			}
			if seen[f.Name] {
				add(at("fields", j, "name"), "stream %q: field %q is declared twice", s.Name, f.Name)
			}
			seen[f.Name] = true
			if !f.Type.valid() {
				add(at("fields", j, "type"), "stream %q: field %q has unknown type %q (use string, int64, float64, bool or timestamp)", s.Name, f.Name, f.Type)
			}
		}
		s.index()
		switch {
		case s.IDField == "":
			add(at(), "stream %q has no id_field (the field whose value identifies duplicates)", s.Name)
		case s.idIndex < 0:
			add(at("id_field"), "stream %q: id_field %q is not a declared field", s.Name, s.IDField)
		case s.Fields[s.idIndex].Type != TypeString:
			add(at("id_field"), "stream %q: id_field %q must be a string field", s.Name, s.IDField)
		default:
			s.Fields[s.idIndex].Required = true
		}
		switch {
		case s.TimeField == "":
			add(at(), "stream %q has no time_field (the event-time field that places events in windows)", s.Name)
		case s.timeIndex < 0:
			add(at("time_field"), "stream %q: time_field %q is not a declared field", s.Name, s.TimeField)
		case s.Fields[s.timeIndex].Type != TypeTimestamp:
			add(at("time_field"), "stream %q: time_field %q must be a timestamp field", s.Name, s.TimeField)
		default:
			s.Fields[s.timeIndex].Required = true
		}
	}

	views := map[string]bool{}
	for i, v := range c.Views {
		at := func(rest ...any) []any { return append([]any{"views", i}, rest...) }
		if v == nil {
			add(at(), "view %d is empty", i)
			continue
		}
		if !namePattern.MatchString(v.Name) {
			add(at("name"), "view name %q must be lower-case letters, digits and _, starting with a letter", v.Name)
		}
		if views[v.Name] {
			add(at("name"), "view %q is defined twice", v.Name)
		}
		views[v.Name] = true
		s := streams[v.Stream]
		if s == nil {
			add(at("stream"), "view %q is on unknown stream %q", v.Name, v.Stream)
			continue
		}
		v.stream = s
		if r := v.Retention.D(); r != 0 && (r < Day || r%Day != 0) {
			add(at("retention"), "view %q: views[].retention must be a whole number of days (views are kept and dropped by UTC day), or unset to keep them forever; got %s", v.Name, r)
		}
		if sr := s.Retention.D(); sr >= Day && c.Ingest.MaxFutureSkew > 0 {
			// The longest whole-day view retention the stream's retention
			// can recompute (RetentionMargin).
			most := (sr - RetentionMargin(c.Ingest.MaxFutureSkew.D())).Truncate(Day)
			switch {
			case most < Day:
				add(at("retention"), "view %q: streams[%s].retention (%s) is too short for any view: it must be at least one day longer than the view's retention plus ingest.max_future_skew (%s), so at least %s for views[].retention 1d", v.Name, s.Name, fmtDays(sr), c.Ingest.MaxFutureSkew.D(), fmtDays(Day+RetentionMargin(c.Ingest.MaxFutureSkew.D())))
			case v.Retention == 0:
				add(at(), "view %q: views[].retention must be set when streams[%s].retention is (at most %s): a view kept forever would one day be recomputed from a master dataset retention has cut", v.Name, s.Name, fmtDays(most))
			case v.Retention.D() > most:
				add(at("retention"), "view %q: views[].retention (%s) must be at most %s: streams[%s].retention (%s) minus one day and ingest.max_future_skew (%s), so every retained day can be recomputed from the retained master dataset", v.Name, fmtDays(v.Retention.D()), fmtDays(most), s.Name, fmtDays(sr), c.Ingest.MaxFutureSkew.D())
			}
		}
		if v.Granularity == 0 {
			add(at(), "view %q has no granularity (one of 1m, 5m, 15m, 1h, 6h, 1d)", v.Name)
		}
		if len(v.Measures) == 0 {
			add(at(), "view %q has no measures", v.Name)
		}
		v.levels = v.levels[:0]
		if v.LevelNames == nil {
			for _, l := range DefaultLevels {
				if v.Granularity > 0 && l > v.Granularity && l%v.Granularity == 0 {
					v.levels = append(v.levels, l)
				}
			}
		} else {
			day := Granularity(24 * time.Hour)
			for j, name := range *v.LevelNames {
				l, err := ParseGranularity(strings.TrimSpace(name))
				switch {
				case err != nil:
					add(at("levels", j), "view %q: views[].levels: %v", v.Name, err)
				case v.Granularity > 0 && (l <= v.Granularity || l%v.Granularity != 0):
					add(at("levels", j), "view %q: views[].levels: level %s must be coarser than the view's granularity %s and a multiple of it", v.Name, l, v.Granularity)
				case day%l != 0:
					add(at("levels", j), "view %q: views[].levels: level %s must divide one day (levels are written per UTC day)", v.Name, l)
				case slices.Contains(v.levels, l):
					add(at("levels", j), "view %q: views[].levels: level %s is listed twice", v.Name, l)
				default:
					v.levels = append(v.levels, l)
				}
			}
			slices.SortFunc(v.levels, func(a, b Granularity) int { return cmp.Compare(b, a) })
		}
		v.dimIndex = v.dimIndex[:0]
		used := map[string]bool{}
		for j, d := range v.Dimensions {
			f, ok := s.Field(d)
			switch {
			case !ok:
				add(at("dimensions", j), "view %q: dimension %q is not a field of stream %q", v.Name, d, s.Name)
			case f.Type != TypeString:
				add(at("dimensions", j), "view %q: dimension %q must be a string field; it is %s", v.Name, d, f.Type)
			case used[d]:
				add(at("dimensions", j), "view %q: dimension %q is listed twice", v.Name, d)
			}
			if reservedColumn(d) {
				add(at("dimensions", j), "view %q: dimension name %q is reserved (window_start, kafka_partition, chunk, version, view, run_id, a leading _ or a __)", v.Name, d)
			}
			used[d] = true
			v.dimIndex = append(v.dimIndex, s.FieldIndex(d))
		}
		for j := range v.Measures {
			m := &v.Measures[j]
			m.fieldIndex = -1
			if !namePattern.MatchString(m.Name) || reservedColumn(m.Name) {
				add(at("measures", j, "name"), "view %q: measure name %q must be lower-case letters, digits and _ and not a reserved column name (window_start, kafka_partition, chunk, version, view, run_id, a leading _ or a __)", v.Name, m.Name)
			}
			if used[m.Name] {
				add(at("measures", j, "name"), "view %q: measure %q has the name of another dimension or measure", v.Name, m.Name)
			}
			used[m.Name] = true
			k := KindOf(m.Type)
			switch {
			case k == nil:
				add(at("measures", j, "type"), "view %q: measure %q has unknown type %q (use %s)", v.Name, m.Name, m.Type, measureTypeList())
				continue
			case k.Field == FieldNone:
				m.kind = k
				if m.Field != "" {
					add(at("measures", j, "field"), "view %q: measure %q: %s takes no field", v.Name, m.Name, m.Type)
				}
				continue
			}
			m.kind = k
			f, ok := s.Field(m.Field)
			switch {
			case m.Field == "":
				add(at("measures", j), "view %q: measure %q (%s) needs a field", v.Name, m.Name, m.Type)
			case !ok:
				add(at("measures", j, "field"), "view %q: measure %q reads %q, which is not a field of stream %q", v.Name, m.Name, m.Field, s.Name)
			case k.Field == FieldNumeric && !f.Type.Numeric():
				add(at("measures", j, "field"), "view %q: measure %q (%s) needs a numeric field; %q is %s", v.Name, m.Name, m.Type, m.Field, f.Type)
			default:
				m.fieldIndex = s.FieldIndex(m.Field)
			}
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return errs
}

// fmtDays writes a duration in days where it is whole days ("30d"), in
// whole days and the rest otherwise ("29d23h0m0s").
func fmtDays(d time.Duration) string {
	if d < Day {
		return d.String()
	}
	if d%Day == 0 {
		return fmt.Sprintf("%dd", d/Day)
	}
	return fmt.Sprintf("%dd%s", d/Day, d%Day)
}

// reservedColumn reports names used by tandem's own storage columns: its
// fixed columns, names starting with _, and names containing __, which
// tandem derives from measure names (a measure's SQL state columns, such
// as users__uniq_keys and users__sql_state).
func reservedColumn(name string) bool {
	switch name {
	case "window_start", "kafka_partition", "chunk", "version", "view", "run_id":
		return true
	}
	return strings.HasPrefix(name, "_") || strings.Contains(name, "__")
}
