package schemas

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultConfigPath is where commands look for the configuration when no
// --config is given.
const DefaultConfigPath = "tandem.yaml"

// Config is tandem.yaml as every component reads it: the vocabulary
// (streams, views, chunk size, the future-skew limit of event validation),
// the connections to the outside systems and the bearer tokens, which
// several components share, and each component's own section, kept for the
// package that owns it to decode and validate (Sections). The whole file
// is loaded and validated at once by package config.
type Config struct {
	Kafka      KafkaConfig      `yaml:"kafka"`
	ClickHouse ClickHouseConfig `yaml:"clickhouse"`
	S3         S3Config         `yaml:"s3"`
	// ChunkSize is C of the exactness contract: chunk k of a partition holds
	// offsets [k*C, (k+1)*C). Changing it on a running deployment changes
	// what every stored chunk number means, so it is fixed per deployment.
	ChunkSize int64      `yaml:"chunk_size"`
	Auth      AuthConfig `yaml:"auth"`
	Streams   []*Stream  `yaml:"streams"`
	Views     []*View    `yaml:"views"`
	// Sections are ingest, serve, speed, archive, batch and status, each
	// decoded by its owner (ingest.ConfigFrom, …).
	Sections `yaml:",inline"`

	// MaxFutureSkew is ingest.max_future_skew: how far past its Kafka
	// timestamp an event's time may lie. It sits in the ingest section
	// of the file, but it is part of every layer's verdict on an event
	// (NewDecoder) and of the retention rules, so the vocabulary owns it.
	MaxFutureSkew Duration `yaml:"-"`

	// Path is the file the configuration was read from, if any.
	Path string `yaml:"-"`
	loc  *locator
}

// DefaultMaxFutureSkew is ingest.max_future_skew when the file leaves it out.
const DefaultMaxFutureSkew = Duration(time.Hour)

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
		Kafka:         KafkaConfig{Brokers: []string{"127.0.0.1:9092"}, ReplicationFactor: 1, GroupPrefix: "tandem"},
		ClickHouse:    ClickHouseConfig{Addr: "127.0.0.1:9000", Database: "tandem", Username: "default", AnalystUser: "analyst"},
		S3:            S3Config{Endpoint: "127.0.0.1:9100", Bucket: "tandem", Region: "us-east-1"},
		ChunkSize:     10000,
		MaxFutureSkew: DefaultMaxFutureSkew,
		loc:           &locator{},
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
	if e.File == "" {
		// A configuration built in code has no file and no lines.
		return e.Msg
	}
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
// and validates the vocabulary and the shared settings (Read, then
// Validate). The components' sections are left to their owners: package
// config loads and validates the whole file. name is used in error
// messages.
func Parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg, errs := Read(name, data, lookup)
	if len(errs) > 0 {
		return nil, errs
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// Read expands environment references in data and decodes it over
// Default() without validating it: the vocabulary and shared settings
// strictly (an unknown key is an error), each component's section kept
// with its lines. It returns every decoding error; the configuration is
// nil only when data is not a YAML document at all.
func Read(name string, data []byte, lookup func(string) (string, bool)) (*Config, ConfigErrors) {
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
	cfg.loc = &locator{file: name, root: root.Content[0]}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var errs ConfigErrors
	if err := dec.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, ConfigErrors{yamlError(name, err)}
		}
		for _, msg := range te.Errors {
			errs = append(errs, yamlError(name, errors.New(msg)))
		}
	}
	for _, s := range []*Section{&cfg.Ingest, &cfg.Serve, &cfg.Speed, &cfg.Archive, &cfg.Batch, &cfg.Status} {
		s.file = name
	}
	var skew *yaml.Node
	cfg.Ingest, skew = cfg.Ingest.without("max_future_skew")
	if skew != nil {
		if err := skew.Decode(&cfg.MaxFutureSkew); err != nil {
			errs = append(errs, yamlError(name, err))
		}
	}
	errs.Sort()
	return &cfg, errs
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
	if l == nil || l.root == nil {
		return 0
	}
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
	file := ""
	if l != nil {
		file = l.file
	}
	return ConfigError{File: file, Line: l.line(path...), Msg: fmt.Sprintf(format, args...)}
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// clusterPattern is what clickhouse.cluster allows: a remote_servers
// element name, which tandem quotes into Distributed(...) engines.
var clusterPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,62}$`)

var topicPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// Validate checks what the types cannot in the vocabulary and the shared
// settings: references between streams and views, field types that
// measures need, the chunk contract, the connections and the tokens. It
// also builds the lookup indexes streams and views use, so it must run
// (through Parse or package config) before a Config is used.
func (c *Config) Validate() ConfigErrors {
	p := c.Problems()
	c.validate(p)
	return p.Errors()
}

func (c *Config) validate(p *Problems) {
	if c.ChunkSize <= 0 {
		p.Add([]any{"chunk_size"}, "chunk_size must be positive (it is the number of Kafka offsets in one chunk); got %d", c.ChunkSize)
	}
	c.validateConnections(p)
	c.validateAuth(p)
	streams := c.validateStreams(p)
	c.validateViews(p, streams)
}

// validateConnections checks kafka, clickhouse and s3.
func (c *Config) validateConnections(p *Problems) {
	add := p.Add
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
}

// validateAuth checks the tokens, and refuses the example secrets of
// deploy/compose wherever they reach the file.
func (c *Config) validateAuth(p *Problems) {
	add := p.Add
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
}

// validateStreams checks the streams and builds their indexes; it returns
// them by name for the views.
func (c *Config) validateStreams(p *Problems) map[string]*Stream {
	add := p.Add
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
			case c.MaxFutureSkew <= 0:
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
	return streams
}

// validateViews checks the views against their streams and builds their
// indexes.
func (c *Config) validateViews(p *Problems, streams map[string]*Stream) {
	add := p.Add
	views := map[string]bool{}
	for i, v := range c.Views {
		at := func(rest ...any) []any { return append([]any{"views", i}, rest...) }
		if v == nil {
			add(at(), "view %d is empty", i)
			continue
		}
		if !namePattern.MatchString(v.Name) {
			add(at("name"), "view name %q must be lower-case letters, digits and _, starting with a letter", v.Name)
		} else if strings.Contains(v.Name, "__") {
			// <view>__v<n> names the storage of a view's version n.
			add(at("name"), "view name %q must not contain __ (it is reserved for the storage of view versions, <view>__v<n>)", v.Name)
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
		if sr := s.Retention.D(); sr >= Day && c.MaxFutureSkew > 0 {
			// The longest whole-day view retention the stream's retention
			// can recompute (RetentionMargin).
			most := (sr - RetentionMargin(c.MaxFutureSkew.D())).Truncate(Day)
			switch {
			case most < Day:
				add(at("retention"), "view %q: streams[%s].retention (%s) is too short for any view: it must be at least one day longer than the view's retention plus ingest.max_future_skew (%s), so at least %s for views[].retention 1d", v.Name, s.Name, fmtDays(sr), c.MaxFutureSkew.D(), fmtDays(Day+RetentionMargin(c.MaxFutureSkew.D())))
			case v.Retention == 0:
				add(at(), "view %q: views[].retention must be set when streams[%s].retention is (at most %s): a view kept forever would one day be recomputed from a master dataset retention has cut", v.Name, s.Name, fmtDays(most))
			case v.Retention.D() > most:
				add(at("retention"), "view %q: views[].retention (%s) must be at most %s: streams[%s].retention (%s) minus one day and ingest.max_future_skew (%s), so every retained day can be recomputed from the retained master dataset", v.Name, fmtDays(v.Retention.D()), fmtDays(most), s.Name, fmtDays(sr), c.MaxFutureSkew.D())
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
