// Package clickhouse is tandem's adapter for ClickHouse: the DDL of every
// table and view tandem keeps there (DDL, Migrate), and the queries the
// speed, batch and serving layers run against them.
//
// It speaks the native protocol through clickhouse-go v2 and stays in the SQL
// subset that both ClickHouse 18.16 (the server the tests run) and current
// ClickHouse accept. Newer syntax (TTL, LowCardinality, DateTime64) is used
// only when the connected server's version has it; see Version.
//
// Identifiers (database, tables, columns) come only from a validated
// schemas.Config, whose names are lower-case letters, digits and '_'; they
// are quoted anyway. Values a user controls are bound with '?' parameters or
// are numbers the adapter formats itself.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"

	"github.com/tandem-analytics/tandem/schemas"
)

// Connection limits. ClickHouse answers tandem's queries in milliseconds to
// seconds; the read timeout covers a large batch load or a FINAL scan on a
// busy server, and stops a dead server from hanging a caller forever.
const (
	dialTimeout  = 5 * time.Second
	readTimeout  = 2 * time.Minute
	maxOpenConns = 8
	maxIdleConns = 4
)

// DB is a connection pool to one ClickHouse server, bound to tandem's
// database. It is safe for concurrent use.
type DB struct {
	conn    driver.Conn
	db      string
	version Version
	// cluster is clickhouse.cluster ("": one server). On a cluster the
	// sharded tables' rows live in local tables (LocalTable) on each
	// server, under Distributed tables of the plain names.
	cluster string
	// servers are connections to every server of the cluster, in
	// system.clusters order: DDL, ALTERs of the local tables and writes
	// of the shared tables go to each (forEach). nil without a cluster,
	// and in the DB forEach hands out for one server.
	servers []*DB
	addr    string
}

// Open connects to the server cfg names, checks that it answers, and reads
// its version. It does not create the database: Migrate does.
func Open(ctx context.Context, cfg schemas.ClickHouseConfig) (*DB, error) {
	if cfg.Addr == "" {
		return nil, errors.New("clickhouse: no address configured (clickhouse.addr)")
	}
	database := cfg.Database
	if database == "" {
		database = "tandem"
	}
	if !identPattern.MatchString(database) {
		return nil, fmt.Errorf("clickhouse: database name %q must be lower-case letters, digits and _", database)
	}
	// The secure native port takes TLS from the first byte; cfg.Addr must
	// name it (tcp_port_secure), not the plain one.
	db, err := open(ctx, cfg, cfg.Addr, database, 0)
	if err != nil || cfg.Cluster == "" {
		return db, err
	}
	addrs, quorum, err := db.clusterServers(ctx, cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	if quorum > 1 {
		// Reconnect with the quorum every write needs.
		db.Close()
		if db, err = open(ctx, cfg, cfg.Addr, database, quorum); err != nil {
			return nil, err
		}
	}
	for _, a := range addrs {
		s, err := open(ctx, cfg, a, database, quorum)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("clickhouse: server %s of cluster %s (clickhouse.cluster): %w", a, cfg.Cluster, err)
		}
		s.version = db.version
		db.servers = append(db.servers, s)
	}
	return db, nil
}

// open connects to one server. quorum > 1 sets insert_quorum (a
// replicated cluster).
func open(ctx context.Context, cfg schemas.ClickHouseConfig, addr, database string, quorum int) (*DB, error) {
	tlsCfg, err := cfg.TLS.Load("clickhouse.tls")
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	var settings clickhouse.Settings
	if cfg.Cluster != "" {
		// An insert into a Distributed table returns once every shard has
		// its rows, not when they are queued on this server: the batch
		// load counts the rows right after, and the speed layer commits
		// Kafka offsets only for rows that are stored.
		settings = clickhouse.Settings{"insert_distributed_sync": 1}
	}
	if quorum > 1 {
		// Every replica of the shard has an insert before it returns, so
		// a read that lands on any replica sees it: the batch load counts
		// its rows right after loading, serving reads what the speed
		// layer wrote. The price: a shard with a replica down takes no
		// writes until it is back (docs/architecture.md, "ClickHouse
		// clusters").
		settings["insert_quorum"] = quorum
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:     []string{addr},
		Settings: settings,
		TLS:      tlsCfg,
		// "default" always exists; tandem's own database may not yet, and
		// every query names its tables fully.
		Auth:            clickhouse.Auth{Database: "default", Username: cfg.Username, Password: cfg.Password},
		DialTimeout:     dialTimeout,
		ReadTimeout:     readTimeout,
		MaxOpenConns:    maxOpenConns,
		MaxIdleConns:    maxIdleConns,
		ConnMaxLifetime: time.Hour,
		Compression:     &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse: connecting to %s: %w", addr, err)
	}
	db := &DB{conn: conn, db: database, cluster: cfg.Cluster, addr: addr}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: %s does not answer: %w", addr, err)
	}
	var raw string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&raw); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: reading the server version: %w", err)
	}
	if db.version, err = ParseVersion(raw); err != nil {
		conn.Close()
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	return db, nil
}

// clusterServers returns the address of every server of the cluster as
// the server at cfg.Addr lists it in system.clusters (host_address and
// port; with clickhouse.tls the cluster's remote_servers must list the
// secure ports), and with clickhouse.replicated the insert quorum: the
// replicas of the smallest shard.
func (db *DB) clusterServers(ctx context.Context, cfg schemas.ClickHouseConfig) ([]string, int, error) {
	rows, err := db.conn.Query(ctx, "SELECT host_address, toUInt32(port), toUInt32(shard_num) FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", cfg.Cluster)
	if err != nil {
		return nil, 0, fmt.Errorf("clickhouse: reading cluster %s (clickhouse.cluster) from system.clusters of %s: %w", cfg.Cluster, cfg.Addr, err)
	}
	var addrs []string
	replicas := map[uint32]int{}
	for rows.Next() {
		var host string
		var p, shard uint32
		if err := rows.Scan(&host, &p, &shard); err != nil {
			rows.Close()
			return nil, 0, fmt.Errorf("clickhouse: reading cluster %s from system.clusters: %w", cfg.Cluster, err)
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(int(p))))
		replicas[shard]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("clickhouse: reading cluster %s from system.clusters: %w", cfg.Cluster, err)
	}
	if len(addrs) == 0 {
		return nil, 0, fmt.Errorf("clickhouse: clickhouse.cluster %q: the server at %s has no such cluster in its remote_servers", cfg.Cluster, cfg.Addr)
	}
	quorum := 0
	for _, n := range replicas {
		if quorum == 0 || n < quorum {
			quorum = n
		}
	}
	if !cfg.Replicated {
		if quorum > 1 {
			return nil, 0, fmt.Errorf("clickhouse: cluster %s has shards of several replicas; set clickhouse.replicated (Replicated tables), or list one server per shard", cfg.Cluster)
		}
		quorum = 0
	}
	return addrs, quorum, nil
}

// Cluster returns clickhouse.cluster ("" on one server).
func (db *DB) Cluster() string { return db.cluster }

// local is the table that holds a sharded table's rows on each server:
// LocalTable on a cluster, the table itself on one server.
func (db *DB) local(table string) string {
	if db.cluster == "" {
		return table
	}
	return LocalTable(table)
}

// forEach calls fn with each server of the cluster in turn (a DB bound
// to that server alone), or with db itself on one server. It is what ON
// CLUSTER would do, without the ZooKeeper that ON CLUSTER needs
// (docs/architecture.md, "ClickHouse clusters"). It stops at the first
// error, naming the server.
func (db *DB) forEach(fn func(s *DB) error) error {
	if len(db.servers) == 0 {
		return fn(db)
	}
	for _, s := range db.servers {
		if err := fn(s); err != nil {
			return fmt.Errorf("on server %s: %w", s.addr, err)
		}
	}
	return nil
}

// Conn returns the underlying connection pool, for queries this package does
// not offer. Do not close it; call DB.Close.
func (db *DB) Conn() driver.Conn { return db.conn }

// Database returns the name of tandem's database.
func (db *DB) Database() string { return db.db }

// ServerVersion returns the version the server reported at Open.
func (db *DB) ServerVersion() Version { return db.version }

// Close closes every connection of the pool.
func (db *DB) Close() error {
	for _, s := range db.servers {
		s.Close()
	}
	return db.conn.Close()
}

// Ping checks that the server answers; readiness checks use it.
func (db *DB) Ping(ctx context.Context) error { return db.conn.Ping(ctx) }

// Version is a ClickHouse server version, major.minor (e.g. 18.16, 24.8).
type Version struct {
	Major, Minor int
}

// Baseline is the oldest server tandem supports, and the version whose DDL
// defines the fingerprints Migrate records: a server upgrade does not change
// what a table means, so it must not change its fingerprint.
var Baseline = Version{18, 16}

// ParseVersion reads "18.16.1", "24.8.4.13" or "26.5.1.1".
func ParseVersion(s string) (Version, error) {
	parts := strings.SplitN(strings.TrimSpace(s), ".", 3)
	if len(parts) < 2 {
		return Version{}, fmt.Errorf("server version %q is not major.minor", s)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return Version{}, fmt.Errorf("server version %q is not major.minor", s)
	}
	return Version{major, minor}, nil
}

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// AtLeast reports whether v is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	return v.Major > major || (v.Major == major && v.Minor >= minor)
}

// Feature gates. Each names the release that introduced the feature; older
// servers get the common-subset alternative.

// HasTTL: table TTL (19.6). Without it, raw events expire through
// DB.DeleteExpiredRawEvents.
func (v Version) HasTTL() bool { return v.AtLeast(19, 6) }

// HasLowCardinality: LowCardinality(String) as a production type. It was
// experimental in 18.x and 19.x; 20.1 is the first release where it is on by
// default everywhere tandem cares about.
func (v Version) HasLowCardinality() bool { return v.AtLeast(20, 1) }

// HasDateTime64: millisecond timestamps (20.1). Raw-event timestamps keep
// their milliseconds only on such servers; 18.16 stores whole seconds.
func (v Version) HasDateTime64() bool { return v.AtLeast(20, 1) }

// identPattern is what tandem's config allows as a name (schemas validates
// it too); the adapter checks again before building SQL with a name.
var identPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// ident quotes a validated identifier.
func ident(name string) string { return "`" + name + "`" }

// table returns the fully qualified, quoted name of a table in db.
func qualified(db, table string) string { return ident(db) + "." + ident(table) }

// quoteString writes s as a ClickHouse string literal. It is used only for
// names from the validated configuration (view names in the merged view's
// definition, where no parameters can be bound).
func quoteString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(s) + "'"
}

// Server error codes that mean "up, but too loaded for this query now":
// the same query may succeed later.
const (
	codeTimeoutExceeded            = 159
	codeTooManySimultaneousQueries = 202
	codeMemoryLimitExceeded        = 241
)

// IsBusy reports whether err is the server refusing or abandoning a query
// for load (too many simultaneous queries, a time or memory limit), as
// opposed to a server that is unreachable or a query that is wrong.
// Serving answers such failures with 503 and Retry-After instead of
// leaving the speed rows out.
func IsBusy(err error) bool {
	var ex *proto.Exception
	if !errors.As(err, &ex) {
		return false
	}
	switch ex.Code {
	case codeTimeoutExceeded, codeTooManySimultaneousQueries, codeMemoryLimitExceeded:
		return true
	}
	return false
}
